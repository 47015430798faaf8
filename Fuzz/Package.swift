// swift-tools-version:6.2
// libFuzzer targets for the STUN decoder, the TURN state machine and the TURN client. A separate package so the
// main build never needs -sanitize=fuzzer. Build and run with scripts/fuzz.sh.
import PackageDescription

let package = Package(
    name: "fz-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "fz", path: "..")],
    targets: [
        .target(name: "CFuzzerDriver"),
        .executableTarget(
            name: "fz-fuzz-turn",
            dependencies: [
                "CFuzzerDriver", .product(name: "STUN", package: "fz"), .product(name: "TURN", package: "fz"),
                .product(name: "Connectivity", package: "fz"),
            ]
        ),
    ]
)
