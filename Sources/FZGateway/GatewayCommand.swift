import ArgumentParser
import FZControl
import FZControlClient
import FZCore
import FZDaemon
import FZLinux
import FZTunnel
import Foundation
import Logging
import ServiceLifecycle
import Tunnel
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// `fz-gateway`: the portal-driven mode (`FZ_PORTAL_URL` or `--portal-url`, and a site token from
/// `FZ_TOKEN`, `--token-file` or `$CREDENTIALS_DIRECTORY/fz-token`), or the static-peer mode
/// (`--wg-config`): a WireGuard interface configured from a wg-quick file, interoperable with
/// wireguard-go and the kernel implementation.
public struct GatewayCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fz-gateway",
        abstract: "The fz gateway: a WireGuard data plane on a TUN interface.",
        discussion: """
            Static-peer mode (--wg-config FILE) reads a wg-quick(8) file: [Interface] PrivateKey, \
            ListenPort, Address, MTU; [Peer] PublicKey, PresharedKey, AllowedIPs, Endpoint, \
            PersistentKeepalive. It creates the TUN interface, assigns the addresses, adds a route for \
            each AllowedIPs prefix (except /0 prefixes, which need policy routing), and notifies systemd \
            (READY=1) once traffic can flow, and pings its watchdog (WATCHDOG=1 at half WatchdogSec) \
            from the data-plane thread. SIGTERM or SIGINT removes the interface and exits 0. \
            Needs CAP_NET_ADMIN.

            Portal mode (without --wg-config; FZ_PORTAL_URL and FZ_TOKEN set): a fresh WireGuard key             per start, no disk state; joins the portal as a gateway of the token's site, adds a peer             for each client the portal authorizes (only the client's tunnel addresses as sources, only             the authorized resources, protocols and ports as destinations) until the authorization             expires or is revoked, forwards into the Site with masquerade (an nftables table of its own,             removed at exit), and notifies READY=1 once it has joined.
            """)

    @Option(name: .customLong("wg-config"), help: ArgumentHelp("A wg-quick configuration file.", valueName: "file"))
    var wgConfig: String?

    @Option(help: ArgumentHelp("Name of the TUN interface to create (at most 15 bytes).", valueName: "name"))
    var interface: String = "fz0"

    @Option(help: ArgumentHelp("Portal mode: the fz-portal to join (http(s):// or ws(s)://; default $FZ_PORTAL_URL).", valueName: "url"))
    var portalUrl: String?

    @Option(help: ArgumentHelp(
        "Portal mode: file holding the site token (default: $FZ_TOKEN, then $CREDENTIALS_DIRECTORY/fz-token).", valueName: "path"))
    var tokenFile: String?

    @Option(help: "Portal mode: the name the portal shows for this gateway (default: the host name).")
    var name: String?

    @Option(help: "Portal mode: UDP port for WireGuard (0: any free port).")
    var listenPort: UInt16 = 0

    @Option(help: "Portal mode: MTU of the TUN interface.")
    var mtu: Int = 1280

    @Flag(inversion: .prefixedNo, help: "Portal mode: masquerade traffic into the Site (an nftables table of the gateway's own).")
    var masquerade: Bool = true

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Log format: text or json (one object per line).")
    var logFormat: String = "text"

    @Option(help: ArgumentHelp(
        "Serve Prometheus /metrics (per-peer handshake and byte counters, drops, offloads), /healthz and /readyz on this address (off by default).",
        valueName: "addr:port"))
    var metricsListen: String?

    @Flag(inversion: .prefixedNo, help: """
        TUN offloads: TCP segmentation and checksum offload on the TUN interface (virtio header), \
        UDP GSO and GRO on the sockets. Nothing changes on the wire; falls back by itself where the \
        kernel lacks them.
        """)
    var offload: Bool = true

    public init() {}

    public func validate() throws {
        if wgConfig == nil {
            _ = try portalSettings()
        }
        guard !interface.isEmpty, interface.utf8.count <= 15, !interface.contains("/"), !interface.contains(" ") else {
            throw ValidationError("--interface must be 1-15 bytes without '/' or spaces")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'") }
        guard LogFormat(rawValue: logFormat) != nil else { throw ValidationError("--log-format: '\(logFormat)' is not text or json") }
        if let m = metricsListen, SocketAddress(m) == nil {
            throw ValidationError("--metrics-listen: '\(m)' is not ADDR:PORT")
        }
    }

    public func run() throws {
        (LogFormat(rawValue: logFormat) ?? .text).bootstrap()
        var logger = Logger(label: "fz-gateway")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        guard let path = wgConfig else {
            let settings = try portalSettings()
            do {
                try PortalGateway.run(settings, logger: logger)
            } catch {
                logger.critical("fz-gateway failed: \(error)")
                throw ExitCode.failure
            }
            return
        }
        let text: String
        do {
            text = try Self.readFile(path)
        } catch {
            throw ValidationError("cannot read \(path): \(error)")
        }
        let config: WireGuardConfiguration
        do {
            config = try WireGuardConfiguration.parse(text)
        } catch {
            throw ValidationError("\(path): \(error)")
        }
        for warning in config.warnings { logger.warning("\(path): \(warning)") }
        do {
            try StaticGateway.run(config: config, interfaceName: interface, offload: offload,
                                  metricsListen: metricsListen.flatMap { SocketAddress($0) }, logger: logger)
        } catch {
            logger.critical("fz-gateway failed: \(error)")
            throw ExitCode.failure
        }
    }

    /// The portal mode's settings from flags and environment; errors name the flag.
    func portalSettings(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> PortalGatewaySettings {
        guard let text = portalUrl ?? environment["FZ_PORTAL_URL"] else {
            throw ValidationError("either --wg-config FILE (static mode) or --portal-url / FZ_PORTAL_URL (portal mode) is required")
        }
        do {
            let url = try PortalURL(text, flag: portalUrl != nil ? "--portal-url" : "FZ_PORTAL_URL")
            let token = try PortalToken.resolve(tokenFile: tokenFile, environment: environment)
            guard (576...9000).contains(mtu) else { throw ValidationError("--mtu must be 576-9000") }
            let name = (name ?? ProcessInfo.processInfo.hostName).trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, name.utf8.count <= 255 else { throw ValidationError("--name must be 1-255 bytes") }
            return PortalGatewaySettings(url: url, token: token, name: name, interfaceName: interface, listenPort: listenPort, mtu: mtu,
                                         offload: offload, metricsListen: metricsListen.flatMap { SocketAddress($0) },
                                         masquerade: masquerade)
        } catch let error as FZControl.ValidationError {
            throw ValidationError("\(error.field): \(error.reason)")
        }
    }

    static func readFile(_ path: String) throws(SystemError) -> String {
        guard let file = fopen(path, "r") else { throw SystemError(errno: errno, call: "fopen(\(path))") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n > 0 { bytes += chunk[0..<n] }
            if n < chunk.count {
                if ferror(file) != 0 { throw SystemError(errno: errno, call: "fread(\(path))") }
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Builds the interface, sockets and data plane from a configuration, runs the loop on its own
/// thread, and waits on the calling thread for SIGTERM/SIGINT.
public enum StaticGateway {
    public static func run(config: WireGuardConfiguration, interfaceName: String, offload: Bool = true,
                           metricsListen: SocketAddress? = nil, logger: Logger) throws {
        // Before any thread exists, so every thread inherits the mask and only sigwait sees them.
        try TerminationSignals.block()

        let mtu = config.interface.mtu ?? WireGuardConfiguration.defaultMTU
        let (seconds, nanoseconds) = RealtimeClock.now()
        let wallClock = WireGuard.WallClock(anchor: TAI64N(unixSeconds: seconds, nanoseconds: nanoseconds),
                                            at: MonotonicClock.now())
        var state = TunnelState(device: Device(privateKey: config.interface.privateKey, wallClock: wallClock))
        for peer in config.peers {
            let configuration = PeerConfiguration(
                publicKey: peer.publicKey, presharedKey: peer.presharedKey,
                persistentKeepalive: peer.persistentKeepalive.map { .seconds($0) }, endpoint: peer.endpoint, mtu: mtu)
            // Static peers roam (wg-quick semantics) and AllowedIPs alone decides what they reach.
            guard state.addPeer(configuration, allowedIPs: peer.allowedIPs) != nil else {
                throw WireGuardConfigurationError(line: peer.line, key: "PublicKey", message: "cannot add this peer")
            }
        }

        let tun = try TunDevice(name: interfaceName, offload: offload)
        if offload, !tun.hasVirtioHeader {
            logger.notice("TUN offloads unavailable (IFF_VNET_HDR or TUNSETOFFLOAD refused): one packet per read and write")
        }
        let netlink = try RouteNetlinkSocket()
        defer { netlink.close() }
        try netlink.setLink(index: tun.index, up: false, mtu: mtu)
        for address in config.interface.addresses { try netlink.addAddress(address, index: tun.index) }
        try netlink.setLink(index: tun.index, up: true, mtu: nil)
        for peer in config.peers {
            for prefix in peer.allowedIPs {
                if prefix.prefixLength == 0 {
                    logger.warning("not routing \(prefix) to \(tun.name): a default route needs policy routing, which is not implemented")
                    continue
                }
                try netlink.addRoute(prefix, index: tun.index)
            }
        }

        let port = config.interface.listenPort ?? 0
        let socketV4 = try UDPSocket(bindingTo: SocketAddress(IPv4Address.any, port),
                                     receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20)
        var socketV6: UDPSocket?
        do {
            socketV6 = try UDPSocket(bindingTo: SocketAddress(IPv6Address.any, socketV4.localAddress.port),
                                     receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20)
        } catch {
            logger.notice("no IPv6 socket: \(error)")
        }

        let loop = try EventLoop()
        let plane = DataPlane(state: state, tun: tun, socketV4: socketV4, socketV6: socketV6, mtu: mtu, logger: logger)
        plane.watchdog = Watchdog(loops: 1)
        let readiness = Readiness()
        var endpoint: MetricsServer?
        if let address = metricsListen {
            let metrics = GatewayMetrics()
            plane.metrics = { metrics.publish($0) }
            endpoint = MetricsServer(address: address, readiness: readiness, metrics: metrics, logger: logger)
        }
        try plane.attach(to: loop)
        let thread = try loop.start(name: "fz-gw-loop")
        logger.info("interface up", metadata: [
            "interface": "\(tun.name)", "port": "\(socketV4.localAddress.port)",
            "public-key": "\(state.device.publicKey)", "peers": "\(config.peers.count)", "mtu": "\(mtu)",
            "offload": "\(tun.hasVirtioHeader ? "tso+gro" : "off")",
        ])
        readiness.set(true)
        SystemdNotifier.notify("READY=1\nSTATUS=\(tun.name) up, \(config.peers.count) peer(s), port \(socketV4.localAddress.port)")

        let signal = try TerminationSignals.wait()
        logger.info("signal \(signal): stopping")
        readiness.set(false)
        SystemdNotifier.notify("STOPPING=1")
        endpoint?.stop()
        loop.stop()
        thread.join()
        let summary = Self.summary(plane)
        // The loop has returned: this thread owns everything now. Closing the TUN descriptor removes
        // the interface with its addresses and routes.
        plane.close(loop: loop)
        logger.info("stopped", metadata: ["counters": "\(summary)"])
    }

    static func summary(_ plane: DataPlane) -> String {
        let device = plane.device
        var parts = [plane.counters.summary, "udp_send_dropped=\(plane.udpSendDropped)",
                     "device_dropped=\(device.dropped.total)", "cookie_replies_sent=\(device.cookieRepliesSent)",
                     "rate_limited=\(device.dropped[.rateLimited])", "bad_mac1=\(device.dropped[.invalidMAC1])",
                     "handshake_auth_failed=\(device.dropped[.authenticationFailed])"]
        for id in plane.device.peerIDs {
            let s = plane.device[id].stats
            parts.append("peer[\(plane.device[id].publicKey)] tx=\(s.packetsSent) rx=\(s.packetsReceived) "
                         + "handshakes=\(s.handshakesCompleted) dropped=\(s.dropped.total)")
        }
        return parts.joined(separator: " ")
    }
}

/// `--metrics-listen`: the HTTP endpoint runs on the Swift concurrency pool (the control plane),
/// never on the data-plane thread, which only publishes a snapshot once a second.
final class MetricsServer: Sendable {
    private let group: ServiceGroup
    private let task: Task<Void, Never>

    init(address: SocketAddress, readiness: Readiness, metrics: GatewayMetrics, logger: Logger) {
        let service = DaemonEndpoints.service(address: address, readiness: readiness, logger: logger) { metrics.render() }
        // Termination signals are handled by the main thread (sigwait); the group only runs the server.
        let group = ServiceGroup(services: [service], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        self.group = group
        task = Task.detached {
            do { try await group.run() } catch { logger.error("metrics endpoint failed: \(error)") }
        }
    }

    /// Stops the server (asynchronously: the process exits soon after anyway).
    func stop() {
        let group = self.group
        Task { await group.triggerGracefulShutdown() }
    }
}

/// The executable's entry point (keeps ArgumentParser out of the thin `fz-gateway` target).
public enum GatewayMain {
    public static func run() { GatewayCommand.main() }
}
