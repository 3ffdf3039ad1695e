// swift-tools-version:5.9
// MobileMoEKit: runs MobileMoE checkpoints (the official layout, DESIGN.md §3) on iOS/macOS
// (Metal) and anywhere Swift runs (portable CPU reference). No package dependencies.
import PackageDescription

let package = Package(
    name: "MobileMoEKit",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "MobileMoEKit", targets: ["MobileMoEKit"]),
        .executable(name: "mobilemoe", targets: ["mobilemoe"]),
        .executable(name: "mobilemoe-sampler-bench", targets: ["mobilemoe-sampler-bench"]),
    ],
    targets: [
        .target(
            name: "MobileMoEKit",
            path: "swift/MobileMoEKit/Sources/MobileMoEKit",
            // Kernel sources compiled at run time by the Metal backend (makeLibrary(source:)).
            resources: [.copy("Kernels")]
        ),
        .executableTarget(
            name: "mobilemoe",
            dependencies: ["MobileMoEKit"],
            path: "swift/MobileMoEKit/Sources/mobilemoe"
        ),
        // Sampler speed at 128,256 logits (JSON); a benchmark, not a test.
        .executableTarget(
            name: "mobilemoe-sampler-bench",
            dependencies: ["MobileMoEKit"],
            path: "swift/MobileMoEKit/Sources/SamplerBenchmark"
        ),
        // The loader fuzz driver (issue 11): mutated checkpoint folders, one child process per case.
        .executableTarget(
            name: "mobilemoe-fuzz",
            dependencies: ["MobileMoEKit"],
            path: "swift/MobileMoEKit/Sources/mobilemoe-fuzz"
        ),
        // Tests only: runs the GPU kernels on the CPU (kernels/mm_cpu.h) so the GPU forward pass
        // is checked on machines without Metal.
        .target(
            name: "KernelEmulator",
            path: "swift/MobileMoEKit/Tests/KernelEmulator",
            cxxSettings: [
                // the shipped copies of the bodies first; kernels/ only for mm_cpu.h
                .headerSearchPath("../../Sources/MobileMoEKit/Kernels"),
                .headerSearchPath("../../../../kernels"),
            ]
        ),
        .testTarget(
            name: "MobileMoEKitTests",
            dependencies: ["MobileMoEKit", "KernelEmulator"],
            path: "swift/MobileMoEKit/Tests/MobileMoEKitTests",
            exclude: ["Fixtures"]
        ),
    ],
    cxxLanguageStandard: .cxx20
)
