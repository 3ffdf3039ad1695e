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
    ],
    targets: [
        .target(
            name: "MobileMoEKit",
            path: "swift/MobileMoEKit/Sources/MobileMoEKit"
        ),
        .executableTarget(
            name: "mobilemoe",
            dependencies: ["MobileMoEKit"],
            path: "swift/MobileMoEKit/Sources/mobilemoe"
        ),
        .testTarget(
            name: "MobileMoEKitTests",
            dependencies: ["MobileMoEKit"],
            path: "swift/MobileMoEKit/Tests/MobileMoEKitTests",
            exclude: ["Fixtures"]
        ),
    ]
)
