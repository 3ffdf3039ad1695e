// One config.json validation contract for Python and Swift (issue 11):
// tests/fixtures/config_contract.json (written by tests/fixtures/make_config_contract.py and
// checked on the Python side by tests/test_config_contract.py) lists configs with the verdict
// both loaders must give, and for errors the field the message must name.
import Foundation
import XCTest
@testable import MobileMoEKit

final class ConfigContractTests: XCTestCase {
    func testSameVerdictsAsPython() throws {
        let url = Fixtures.repository.appendingPathComponent("tests/fixtures/config_contract.json")
        let contract = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let base = try XCTUnwrap(contract["base"] as? [String: Any])
        let cases = try XCTUnwrap(contract["cases"] as? [[String: Any]])
        XCTAssertGreaterThan(cases.count, 50)
        var disagreements: [String] = []
        for c in cases {
            let name = c["name"] as! String
            let text: Data
            if let raw = c["raw"] as? String {
                text = Data(raw.utf8)
            } else {
                var d = base
                for (k, v) in c["patch"] as? [String: Any] ?? [:] { d[k] = v }
                for k in c["remove"] as? [String] ?? [] { d.removeValue(forKey: k) }
                text = try JSONSerialization.data(withJSONObject: d)
            }
            // Through the file reader, as a checkpoint's config.json is read.
            let file = try temporaryDirectory(self).appendingPathComponent("config.json")
            try text.write(to: file)
            let verdict: String, message: String
            do {
                _ = try ModelConfig(contentsOf: file)
                (verdict, message) = ("ok", "")
            } catch let e as ConfigError {
                (verdict, message) = ("error", e.description)
            } catch {
                (verdict, message) = ("unnamed error", "\(type(of: error)): \(error)")
            }
            let expected = c["verdict"] as! String
            if verdict != expected {
                disagreements.append("\(name): Python says \(expected), Swift says \(verdict) \(message)")
            } else if expected == "error", let field = c["field"] as? String, !message.contains(field) {
                disagreements.append("\(name): the error does not name \(field): \(message)")
            }
        }
        XCTAssertTrue(disagreements.isEmpty, "\(disagreements.count) of \(cases.count) cases differ:\n" + disagreements.joined(separator: "\n"))
    }
}
