// Adaptive compute: fewer routed experts per token when the device is under thermal pressure,
// in Low Power Mode or low on battery. Each condition scales the checkpoint's top-k by a
// factor; the smallest factor wins; the result is rounded up and kept >= minimumExperts.
// With top-4 and the defaults: serious 3, critical 2, Low Power Mode 2, battery < 20% 3,
// battery < 10% 2. Fewer experts trade quality for speed and energy (the router weights are
// renormalized over the experts kept).

public struct AdaptiveComputePolicy: Sendable, Equatable {
    public var seriousThermalFactor: Double = 0.75
    public var criticalThermalFactor: Double = 0.5
    public var lowPowerModeFactor: Double = 0.5
    /// Below this battery level (and not charging) `lowBatteryFactor` applies.
    public var lowBatteryThreshold: Float = 0.2
    public var lowBatteryFactor: Double = 0.75
    public var criticalBatteryThreshold: Float = 0.1
    public var criticalBatteryFactor: Double = 0.5
    public var minimumExperts: Int = 1
    /// Tokens between two reads of the device state during generation.
    public var refreshInterval: Int = 16

    public init() {}

    /// The policy that never lowers top-k.
    public static let disabled: AdaptiveComputePolicy = {
        var p = AdaptiveComputePolicy()
        p.seriousThermalFactor = 1
        p.criticalThermalFactor = 1
        p.lowPowerModeFactor = 1
        p.lowBatteryFactor = 1
        p.criticalBatteryFactor = 1
        return p
    }()

    public func factor(for s: DeviceState) -> Double {
        var f = 1.0
        switch s.thermal {
        case .critical: f = min(f, criticalThermalFactor)
        case .serious: f = min(f, seriousThermalFactor)
        case .nominal, .fair: break
        }
        if s.lowPowerMode { f = min(f, lowPowerModeFactor) }
        if let level = s.batteryLevel, !s.isCharging {
            if level < criticalBatteryThreshold {
                f = min(f, criticalBatteryFactor)
            } else if level < lowBatteryThreshold {
                f = min(f, lowBatteryFactor)
            }
        }
        return f
    }

    /// Experts per token for a checkpoint trained with top-`configured`.
    public func expertsPerToken(configured k: Int, state: DeviceState) -> Int {
        let scaled = Int((Double(k) * factor(for: state)).rounded(.up))
        return min(k, max(minimumExperts, scaled))
    }
}
