// The Metal library source on machines without Metal: it parses and type-checks as C++
// against a stub <metal_stdlib> (clang++), the copies of metal/ are current, every launch the
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
        let metal = Self.repo.appendingPathComponent("metal")
        guard FileManager.default.fileExists(atPath: metal.path) else { throw XCTSkip("no metal/ beside the package") }
        for f in KernelSources.sharedFiles {
            let shipped = try KernelSources.text(f)
            let source = try String(contentsOf: metal.appendingPathComponent(f), encoding: .utf8)
            XCTAssertEqual(shipped, source, "\(f) differs from metal/\(f): run swift/sync-kernels.sh")
        }
    }

    func testEveryLaunchHasAnEntryPoint() throws {
        let source = try KernelSources.metalLibrarySource()
        let weights = EmulatedGPUTests.weights
        let plan = GPUForwardPlan(weights: weights)
        let used = Set((plan.launches(tokens: 3, position: 0, expertsPerToken: 2) + plan.launches(tokens: 40, position: 3, expertsPerToken: 2)).map(\.kernel))
        XCTAssertEqual(used, Set(KernelSources.kernelNames))
        for name in KernelSources.kernelNames {
            let mine = source.contains("kernel void \(name)(")
            let instantiated = source.contains("MM_INSTANTIATE(\(name.replacingOccurrences(of: "_f32", with: "")), f32, float)")
            XCTAssertTrue(mine || instantiated || source.contains("[[kernel]] void \(name)("), name)
        }
    }

    func testGeometryMatchesHeaders() throws {
        var defines: [String: Int] = [:]
        for f in KernelSources.files {
            for line in try KernelSources.text(f).split(separator: "\n") where line.hasPrefix("#define MM_") || line.hasPrefix("#define MO_") {
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                if parts.count >= 3, let v = Int(parts[2]) { defines[String(parts[1])] = v }
            }
        }
        let g = KernelGeometry.self
        let expected: [(String, Int)] = [("MM_NT", g.threads), ("MM_NW", g.simdGroups), ("MM_MAX_E", g.maxExperts),
                                         ("MM_MAX_K", g.maxK), ("MM_PT", g.pairsPerGroup), ("MM_CT", g.downWordsPerGroup),
                                         ("MM_BM", g.tileRows), ("MM_BH", g.tileHalf), ("MO_TOK", g.linearTokens),
                                         ("MO_MAX_D", g.maxHeadDim), ("MM_RPW", g.sharedRowsPerGroup / g.simdGroups),
                                         ("MM_MAX_H", g.maxHidden)]
        for (name, value) in expected { XCTAssertEqual(defines[name], value, name) }
    }
}
