// The adaptive-compute policy with injected device states.
import XCTest
@testable import MobileMoEKit

final class PolicyTests: XCTestCase {
    let policy = AdaptiveComputePolicy()

    func k(_ s: DeviceState, _ configured: Int = 4) -> Int { policy.expertsPerToken(configured: configured, state: s) }

    func testTable() {
        let table: [(DeviceState, Int, Int)] = [  // state, configured k, expected k
            (.nominal, 4, 4),
            (DeviceState(thermal: .fair), 4, 4),
            (DeviceState(thermal: .serious), 4, 3),
            (DeviceState(thermal: .critical), 4, 2),
            (DeviceState(lowPowerMode: true), 4, 2),
            (DeviceState(batteryLevel: 0.5), 4, 4),
            (DeviceState(batteryLevel: 0.15), 4, 3),
            (DeviceState(batteryLevel: 0.05), 4, 2),
            (DeviceState(batteryLevel: 0.05, isCharging: true), 4, 4),
            (DeviceState(thermal: .serious, lowPowerMode: true, batteryLevel: 0.15), 4, 2),  // the strongest wins
            (DeviceState(thermal: .critical), 1, 1),
            (DeviceState(thermal: .critical), 2, 1),
            (DeviceState(thermal: .serious), 2, 2),
            (DeviceState(thermal: .critical), 8, 4),
        ]
        for (state, configured, expected) in table {
            XCTAssertEqual(k(state, configured), expected, "\(state) top-\(configured)")
        }
    }

    func testMinimumAndDisabled() {
        var p = AdaptiveComputePolicy()
        p.minimumExperts = 3
        XCTAssertEqual(p.expertsPerToken(configured: 4, state: DeviceState(thermal: .critical)), 3)
        XCTAssertEqual(AdaptiveComputePolicy.disabled.expertsPerToken(configured: 4, state: DeviceState(thermal: .critical, lowPowerMode: true, batteryLevel: 0.01)), 4)
    }

    func testInjectedProvider() async {
        let provider: DeviceStateProvider = FixedDeviceState(DeviceState(thermal: .serious))
        let state = await provider.currentState()
        XCTAssertEqual(k(state), 3)
        #if !canImport(Darwin)
        let system = await defaultDeviceStateProvider().currentState()
        XCTAssertEqual(system, .nominal, "no system signals off Apple platforms")
        #endif
    }
}
