// swift-tools-version:6.2
// fz: zero-trust remote access. See docs/ARCHITECTURE.md for the module graph and its rules:
// protocol targets (FZCore, STUN, TURN) never import the I/O layer (FZLinux) or any daemon target.

import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "fz",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fz-relay", targets: ["fz-relay"]),
        .executable(name: "fz-turnbench", targets: ["fz-turnbench"]),
        .executable(name: "fz-gateway", targets: ["fz-gateway"]),
        .executable(name: "fz-portal", targets: ["fz-portal"]),
        .library(name: "STUN", targets: ["STUN"]),
        .library(name: "TURN", targets: ["TURN"]),
        .library(name: "Connectivity", targets: ["Connectivity"]),
        .executable(name: "fz-client", targets: ["fz-client"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ],
    targets: [
        // MARK: C libraries and shims
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(name: "CIDN", pkgConfig: "libidn", providers: [.apt(["libidn-dev"])]),
        .target(name: "CFZLinux"),

        // MARK: Pure protocol code (no syscalls beyond libc helpers, time is a parameter)
        .target(name: "FZCore", swiftSettings: strict),
        // Crypto and encodings once: libsodium initialised in one place, base64/hex, SHA-256,
        // HMAC (swift-crypto), the TURN REST credential function portal and relay share.
        .target(
            name: "FZCrypto", dependencies: ["CSodium", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict),
        .target(name: "STUN", dependencies: ["FZCore", "FZCrypto", "CIDN"], swiftSettings: strict),
        .target(name: "TURN", dependencies: ["FZCore", "STUN", "FZCrypto"], swiftSettings: strict),
        // The connectivity engine: the TURN client (and, later, the ICE agent), sans-IO.
        .target(name: "Connectivity", dependencies: ["FZCore", "STUN", "FZCrypto"], swiftSettings: strict),
        .target(name: "WireGuard", dependencies: ["FZCore", "FZCrypto", "CSodium"], swiftSettings: strict),
        // The pure state of a tunnel with many dynamic peers: the WireGuard device, AllowedIPs,
        // per-peer paths (direct or relayed) and packet filters.
        .target(name: "Tunnel", dependencies: ["FZCore", "WireGuard"], swiftSettings: strict),

        // MARK: The Linux I/O layer: owns every syscall
        .target(name: "FZLinux", dependencies: ["FZCore", "CFZLinux", "CSystemd"], swiftSettings: strict),

        // MARK: Daemons (I/O shells) and thin executables
        // What every daemon needs once: readiness, the watchdog, /metrics /healthz /readyz, logs.
        .target(
            name: "FZDaemon",
            dependencies: [
                "FZCore", "FZLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "FZRelay",
            dependencies: [
                "FZCore", "STUN", "TURN", "FZLinux", "FZDaemon", "FZControl", "FZControlClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "fz-relay", dependencies: ["FZRelay"], swiftSettings: strict),

        // The tunnel data plane (I/O shell around Tunnel), shared by fz-gateway and fz-client.
        .target(
            name: "FZTunnel",
            dependencies: [
                "FZCore", "STUN", "Tunnel", "WireGuard", "FZLinux", "FZDaemon", "Connectivity",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "FZGateway",
            dependencies: [
                "FZCore", "WireGuard", "Tunnel", "FZTunnel", "FZLinux", "FZDaemon", "FZControl", "FZControlClient", "Connectivity",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "fz-gateway", dependencies: ["FZGateway"], swiftSettings: strict),

        // The control protocol both sides share (docs/protocol.md): typed messages and the value
        // types on the wire. Pure: no HTTP server, database or I/O layer.
        .target(name: "FZControl", dependencies: ["FZCore", "FZCrypto"], swiftSettings: strict),
        // The daemons' side of the control channel: the portal session (WebSocket client,
        // reconnects, token and URL settings).
        .target(
            name: "FZControlClient",
            dependencies: [
                "FZControl", "Connectivity",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The control plane: pure decisions in Portal, storage and HTTP/WebSocket in FZPortal.
        .target(name: "Portal", dependencies: ["FZCore", "FZCrypto", "FZControl"], swiftSettings: strict),
        .target(
            name: "FZPortal",
            dependencies: [
                "FZCore", "FZControl", "Portal", "FZLinux", "FZDaemon", "FZCrypto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "fz-portal", dependencies: ["FZPortal"], swiftSettings: strict),

        // MARK: The client (fz-client SUBCOMMAND): run (the daemon), status, netcheck; all in FZClient.
        .target(
            name: "FZClient",
            dependencies: [
                "FZCore", "STUN", "FZCrypto", "FZLinux", "Connectivity", "FZControl", "FZControlClient", "FZTunnel", "Tunnel",
                "WireGuard", "FZDaemon",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "fz-client", dependencies: ["FZClient"], swiftSettings: strict),
        .testTarget(name: "FZClientTests", dependencies: ["FZClient", "STUN", "FZCore", "FZControl", "FZLinux", "WireGuard", "FZTestSupport"], swiftSettings: strict),

        // MARK: Benchmark tools (scripts/bench-relay.sh)
        .executableTarget(
            name: "fz-turnbench",
            dependencies: [
                "FZCore", "STUN", "Connectivity", "FZLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "fz-forwarder", dependencies: ["FZCore", "FZLinux"], swiftSettings: strict),

        // MARK: Tests
        .target(name: "FZTestSupport", dependencies: ["FZCore"], path: "Tests/FZTestSupport", swiftSettings: strict),
        .testTarget(name: "FZCoreTests", dependencies: ["FZCore", "FZTestSupport"], swiftSettings: strict),
        .testTarget(name: "FZCryptoTests", dependencies: ["FZCrypto"], swiftSettings: strict),
        .testTarget(name: "FZDaemonTests", dependencies: ["FZDaemon", "FZCore", "FZTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "STUNTests", dependencies: ["STUN", "FZTestSupport"], resources: [.copy("Vectors")],
            swiftSettings: strict),
        .testTarget(name: "TURNTests", dependencies: ["TURN", "STUN", "FZCrypto", "FZTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "ConnectivityTests", dependencies: ["Connectivity", "TURN", "STUN", "FZLinux", "FZTestSupport"],
            swiftSettings: strict),
        .testTarget(name: "FZGatewayTests", dependencies: ["FZGateway", "WireGuard", "Tunnel", "FZControl", "FZCore", "FZLinux", "FZTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "FZTunnelTests", dependencies: ["FZTunnel", "Tunnel", "WireGuard", "FZLinux", "FZCore", "FZTestSupport", "Connectivity", "TURN", "STUN",
                                                  .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .testTarget(
            name: "TunnelTests", dependencies: ["Tunnel", "WireGuard", "STUN", "FZCore", "FZTestSupport"], swiftSettings: strict),
        .testTarget(name: "FZControlTests", dependencies: ["FZControl", "FZCore", "FZTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "FZControlClientTests", dependencies: ["FZControlClient", "FZControl", "FZTestSupport"], swiftSettings: strict),
        .testTarget(name: "PortalTests", dependencies: ["Portal", "FZControl", "FZCrypto", "FZTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "FZPortalTests",
            dependencies: [
                "FZPortal", "FZControl", "Portal", "FZDaemon", "FZCrypto", "FZTestSupport",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "WireGuardTests", dependencies: ["WireGuard", "FZTestSupport"], swiftSettings: strict),
        .testTarget(name: "FZLinuxTests", dependencies: ["FZLinux", "FZTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "FZRelayTests", dependencies: ["FZRelay", "TURN", "STUN", "FZLinux", "FZTestSupport"], swiftSettings: strict),
    ]
)
