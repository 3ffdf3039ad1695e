// What the adaptive-compute policy looks at, and where it comes from. The provider is a
// protocol so tests (and Linux) inject a state; Apple platforms read the system
// (SystemDeviceState.swift).

public struct DeviceState: Sendable, Equatable {
    /// ProcessInfo.ThermalState, mirrored so the policy builds everywhere.
    public enum Thermal: Int, Sendable, Comparable {
        case nominal, fair, serious, critical
        public static func < (a: Thermal, b: Thermal) -> Bool { a.rawValue < b.rawValue }
    }

    public var thermal: Thermal
    public var lowPowerMode: Bool
    /// 0...1, nil when unknown (no battery, or monitoring unavailable).
    public var batteryLevel: Float?
    public var isCharging: Bool

    public init(thermal: Thermal = .nominal, lowPowerMode: Bool = false, batteryLevel: Float? = nil, isCharging: Bool = false) {
        self.thermal = thermal
        self.lowPowerMode = lowPowerMode
        self.batteryLevel = batteryLevel
        self.isCharging = isCharging
    }

    public static let nominal = DeviceState()
}

public protocol DeviceStateProvider: Sendable {
    func currentState() async -> DeviceState
}

/// A fixed state: the default on platforms without system signals, and the test double.
public struct FixedDeviceState: DeviceStateProvider {
    public var state: DeviceState
    public init(_ state: DeviceState = .nominal) { self.state = state }
    public func currentState() async -> DeviceState { state }
}

/// The system provider where there is one (Apple platforms), else a nominal fixed state.
public func defaultDeviceStateProvider() -> DeviceStateProvider {
    #if canImport(Darwin)
    return SystemDeviceState()
    #else
    return FixedDeviceState()
    #endif
}
