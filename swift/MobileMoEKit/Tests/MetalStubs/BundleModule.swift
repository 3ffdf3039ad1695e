// SwiftPM generates Bundle.module for targets with resources; swiftc alone does not.
import Foundation
extension Bundle { static let module = Bundle.main }
