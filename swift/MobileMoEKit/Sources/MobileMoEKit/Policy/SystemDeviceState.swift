// The device state on Apple platforms: ProcessInfo's thermal state and Low Power Mode, and on
// iOS the battery level and charging state from UIDevice (read on the main actor, with
// battery monitoring switched on). Not available in swift-corelibs-foundation, hence Darwin only.
#if canImport(Darwin)
import Foundation
#if canImport(UIKit)
import UIKit
#endif

public struct SystemDeviceState: DeviceStateProvider {
    public init() {}

    public func currentState() async -> DeviceState {
        let info = ProcessInfo.processInfo
        var state = DeviceState(thermal: Self.thermal(info.thermalState), lowPowerMode: Self.lowPowerMode(info))
        #if canImport(UIKit) && !os(watchOS)
        let battery = await MainActor.run { () -> (Float, UIDevice.BatteryState) in
            let device = UIDevice.current
            if !device.isBatteryMonitoringEnabled { device.isBatteryMonitoringEnabled = true }
            return (device.batteryLevel, device.batteryState)
        }
        // batteryLevel is -1 when unknown (simulator, monitoring off).
        state.batteryLevel = battery.0 >= 0 ? battery.0 : nil
        state.isCharging = battery.1 == .charging || battery.1 == .full
        #endif
        return state
    }

    static func thermal(_ t: ProcessInfo.ThermalState) -> DeviceState.Thermal {
        switch t {
        case .nominal: return .nominal
        case .fair: return .fair
        case .serious: return .serious
        case .critical: return .critical
        @unknown default: return .serious
        }
    }

    static func lowPowerMode(_ info: ProcessInfo) -> Bool {
        #if os(iOS) || os(macOS) || os(visionOS)
        return info.isLowPowerModeEnabled
        #else
        return false
        #endif
    }
}
#endif
