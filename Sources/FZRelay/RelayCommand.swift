import ArgumentParser
import FZCore
import Logging
import TURN
import FZDaemon

/// `fz-relay`: a standalone STUN/TURN server. Flag names follow coturn's `turnserver` where it
/// has one; every flag can also come from `FZ_RELAY_<FLAG>` in the environment (see
/// `EnvironmentDefaults`), which is how the container image and systemd unit configure it.
public struct RelayCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fz-relay",
        abstract: "A STUN/TURN relay (RFC 8489, RFC 8656) for fz and for any WebRTC application.",
        discussion: """
            Every option can also be set through the environment as FZ_RELAY_<OPTION>, upper case with \
            underscores (FZ_RELAY_LISTENING_PORT=3478). Repeatable options take a comma-separated list there. \
            Command-line values win over the environment.

            SIGHUP re-reads --config FILE and applies users, secrets, quotas and peer rules without \
            dropping allocations. SIGTERM stops gracefully.
            """)

    @Option(help: ArgumentHelp("Address to listen on for STUN/TURN over UDP and TCP (repeatable).", valueName: "ip"))
    var listeningIp: [String] = []

    @Option(help: "Port to listen on, for UDP and (unless --no-tcp) TCP.")
    var listeningPort: Int = 3478

    @Flag(help: "Do not serve TURN over TCP on the listening port (RFC 8656 §3.1; on by default).")
    var noTcp = false

    @Option(help: "TCP client connections the relay accepts at once; more are closed at accept.")
    var maxTcpConnections: Int = 10_000

    @Option(help: "TCP client connections one source IP may hold at once.")
    var maxTcpConnectionsPerIp: Int = 64

    @Option(help: ArgumentHelp(
        "Local address relayed sockets are bound to (repeatable; one IPv4 and one IPv6 are used). Defaults to the listening address when that is not a wildcard.",
        valueName: "ip"))
    var relayIp: [String] = []

    @Option(help: ArgumentHelp(
        "Public address to advertise when behind a 1:1 NAT, as PUBLIC or PUBLIC/PRIVATE (repeatable, one per family).",
        valueName: "ip[/ip]"))
    var externalIp: [String] = []

    @Option(help: "Lowest port for relayed addresses.")
    var minPort: Int = 49152

    @Option(help: "Highest port for relayed addresses.")
    var maxPort: Int = 65535

    @Option(help: "Authentication realm.")
    var realm: String = "fz"

    @Option(help: ArgumentHelp("A static user (repeatable).", valueName: "name:password"))
    var user: [String] = []

    @Option(help: ArgumentHelp(
        "TURN REST API shared secret (repeatable, for rotation). Prefer --static-auth-secret-file: arguments are visible to other users.",
        valueName: "secret"))
    var staticAuthSecret: [String] = []

    @Option(help: ArgumentHelp("File holding REST secrets, one per line (a systemd credential, for example).", valueName: "path"))
    var staticAuthSecretFile: String?

    @Option(help: "Allocations one user may hold at once (0 = unlimited).")
    var userQuota: Int = 0

    @Option(help: "Allocations the relay may hold at once (0 = unlimited).")
    var totalQuota: Int = 0

    @Option(help: "Permissions one allocation may hold.")
    var maxPermissions: Int = 128

    @Option(help: ArgumentHelp("Allow relaying to this range even if denied by default (repeatable).", valueName: "cidr"))
    var allowPeer: [String] = []

    @Option(help: ArgumentHelp("Deny relaying to this range (repeatable; wins over --allow-peer).", valueName: "cidr"))
    var denyPeer: [String] = []

    @Flag(help: "Allow relaying to 127.0.0.0/8 and ::1 (tests and labs only).")
    var allowLoopbackPeers = false

    @Option(help: "Event-loop threads; each owns the allocations it creates (default: one per online processor).")
    var threads: Int?

    @Option(help: "Unauthenticated replies per second per source address (0 disables the limit).")
    var unauthRate: Double = 10

    @Option(help: ArgumentHelp("Serve Prometheus /metrics, /healthz and /readyz on this address (off by default).",
                               valueName: "addr:port"))
    var metricsListen: String?

    @Option(help: ArgumentHelp("Configuration file re-read on SIGHUP: lines of `option = value` with the long option names (user, static-auth-secret, allow-peer, deny-peer, user-quota, total-quota, max-permissions).", valueName: "path"))
    var config: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(help: "text or json.")
    var logFormat: String = "text"

    @OptionGroup(title: "Portal mode")
    var portal: RelayPortalOptions

    public init() {}

    public func run() async throws {
        // Validated here rather than in validate(): ArgumentParser validates before it reports
        // unknown options, and a typo should be named as such.
        let s = try settings()
        s.logFormat.bootstrap()

        var logger = Logger(label: "fz-relay")
        logger.logLevel = s.logLevel
        try await RelayDaemon(settings: s, logger: logger).run()
    }

    /// Checks every flag and builds the daemon's settings; errors name the flag.
    func settings() throws -> RelaySettings {
        try RelaySettings(command: self)
    }
}
