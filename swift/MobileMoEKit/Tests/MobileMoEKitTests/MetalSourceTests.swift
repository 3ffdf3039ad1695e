// The Metal library source on machines without Metal: it parses and type-checks as C++
// against a stub <metal_stdlib> (clang++), the copies of kernels/ are current, every launch the
// plan makes has an entry point, and the grid constants match the headers' #defines.
import Foundation
import XCTest
@testable import MobileMoEKit

final class MetalSourceTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../..").standardizedFileURL

    func clang() throws -> String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let path = "\(dir)/clang++"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw XCTSkip("clang++ not found")
    }

    func testLibrarySourceTypeChecksAsCpp() throws {
        let clang = try clang()
        let dir = try temporaryDirectory(self)
        let file = dir.appendingPathComponent("mobilemoe.metal.cpp")
        // MSL puts [[host_name]] / [[kernel]] on explicit instantiations, where C++ allows no attributes.
        let source = try KernelSources.metalLibrarySource().replacingOccurrences(
            of: #"template \[\[host_name\([^\]]*\)\]\] \[\[kernel\]\]"#, with: "template", options: .regularExpression)
        XCTAssertTrue(source.contains("MM_INSTANTIATE("))
        try source.write(to: file, atomically: true, encoding: .utf8)
        let stubs = Self.repo.appendingPathComponent("swift/MobileMoEKit/Tests/MetalStubs").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: clang)
        p.arguments = ["-std=c++17", "-fsyntax-only", "-Wno-unknown-attributes", "-D__METAL_VERSION__=300",
                       "-I", stubs, file.path]
        let err = Pipe()
        p.standardError = err
        try p.run()
        let output = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, output)
    }

    func testKernelCopiesMatchMetalDirectory() throws {
        let metal = Self.repo.appendingPathComponent("kernels")
        guard FileManager.default.fileExists(atPath: metal.path) else { throw XCTSkip("no kernels/ beside the package") }
        for f in KernelSources.sharedFiles {
            let shipped = try KernelSources.text(f)
            let source = try String(contentsOf: metal.appendingPathComponent(f), encoding: .utf8)
            XCTAssertEqual(shipped, source, "\(f) differs from kernels/\(f): run swift/sync-kernels.sh")
        }
    }

    func testEveryLaunchHasAnEntryPoint() throws {
        let source = try KernelSources.metalLibrarySource()
        let weights = EmulatedGPUTests.weights
        let plan = GPUForwardPlan(weights: weights, geometry: try KernelGeometry.shipped())
        let used = Set((plan.launches(tokens: 3, position: 0, expertsPerToken: 2) + plan.launches(tokens: 40, position: 3, expertsPerToken: 2)).map(\.kernel))
        XCTAssertEqual(used, Set(KernelSources.kernelNames))
        for name in KernelSources.kernelNames {
            let mine = source.contains("kernel void \(name)(")
            let instantiated = source.contains("MM_INSTANTIATE(\(name.replacingOccurrences(of: "_f32", with: "")), f32, float)")
            XCTAssertTrue(mine || instantiated || source.contains("[[kernel]] void \(name)("), name)
        }
    }

    func testGeometryIsReadFromTheHeaders() throws {
        let g = try KernelGeometry.shipped()
        XCTAssertEqual(g.threads, 256)
        XCTAssertEqual(g.simdGroups * 32, g.threads)
        XCTAssertEqual(g.maxHeadDim, 256)
        XCTAssertEqual(g.linearTokens, 8)
        XCTAssertEqual(IntExpression.evaluate("(MM_RPW * MM_NW)", names: ["MM_RPW": 4, "MM_NW": 8]), 32)
        XCTAssertEqual(IntExpression.evaluate(" (2 * B + 4) ", names: ["B": 64]), 132)
        XCTAssertNil(IntExpression.evaluate("(-3.0e38f)", names: [:]))
    }
}
