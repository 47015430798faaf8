import Connectivity
import FZControl
import FZControlClient
import FZCore
import FZDaemon
import FZLinux
import FZTunnel
import Foundation
import Logging
import Synchronization
import Tunnel
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// The portal-driven gateway's settings, checked before anything starts (errors name the flag).
public struct PortalGatewaySettings: Sendable {
    public var url: PortalURL
    public var token: String
    public var name: String
    public var interfaceName: String
    public var listenPort: UInt16
    public var mtu: Int
    public var offload: Bool
    public var metricsListen: SocketAddress?
    /// Masquerade what clients send into the Site (an nftables table the gateway owns).
    public var masquerade: Bool
}

/// The nftables table the gateway owns: masquerade for packets that arrive from its TUN device
/// and leave by another interface, so the Site's hosts answer the gateway and the replies find
/// their way back into the tunnel. Created at start, deleted at exit (also after SIGTERM); nothing
/// else of the host's ruleset is touched. `nft` is run with the ruleset on stdin.
struct MasqueradeTable {
    let name: String
    let interfaceName: String

    init(interfaceName: String) {
        self.interfaceName = interfaceName
        // One table per gateway interface, so two gateways on a host do not share one.
        name = "fz_gateway_" + interfaceName.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }

    func install() throws {
        let rules = """
            table inet \(name) {
                chain postrouting {
                    type nat hook postrouting priority srcnat; policy accept;
                    iifname "\(interfaceName)" oifname != "\(interfaceName)" masquerade
                }
            }
            """
        try Self.nft(["-f", "-"], input: "delete table inet \(name)\n", ignoreFailure: true)
        try Self.nft(["-f", "-"], input: rules)
    }

    func remove() { try? Self.nft(["delete", "table", "inet", name], ignoreFailure: true) }

    @discardableResult
    static func nft(_ arguments: [String], input: String? = nil, ignoreFailure: Bool = false) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        } ?? "/usr/sbin/nft")
        process.arguments = arguments
        let stdin = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try? stdin.fileHandleForWriting.close()
        process.waitUntilExit()
        let message = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        if process.terminationStatus != 0 && !ignoreFailure {
            throw GatewayError("nft \(arguments.joined(separator: " ")) failed: \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return message
    }
}

struct GatewayError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Portal mode: a fresh WireGuard key per start (no disk state), the session to
/// `/api/v1/ws/gateway`, and the data plane on its own loop thread. `authorize`, `revoke`,
/// expiry and `init` go through `Authorizations` (pure); its changes are applied on the loop.
///
/// Each client is an ICE connection (controlled; the client nominates) of the connectivity
/// engine (`ConnectivityDriver` on the data plane's loop) with the credentials of its latest
/// authorization; the gateway's candidates (host, server-reflexive and relayed through the
/// relays in `init`) are trickled to the portal as `ice_candidates`, the client's are fed to
/// the engine, and the path ICE selects is the peer's path. No inbound port needs to be open.
public enum PortalGateway {
    public static func run(_ settings: PortalGatewaySettings, logger: Logger) throws {
        try TerminationSignals.block()
        let privateKey = PrivateKey.generate()
        let (seconds, nanoseconds) = RealtimeClock.now()
        let wallClock = WireGuard.WallClock(anchor: TAI64N(unixSeconds: seconds, nanoseconds: nanoseconds), at: MonotonicClock.now())
        let state = TunnelState(device: Device(privateKey: privateKey, wallClock: wallClock))

        let tun = try TunDevice(name: settings.interfaceName, offload: settings.offload)
        let netlink = try RouteNetlinkSocket()
        try netlink.setLink(index: tun.index, up: false, mtu: settings.mtu)
        try netlink.setLink(index: tun.index, up: true, mtu: nil)
        Self.enableForwarding(logger: logger)
        let table = MasqueradeTable(interfaceName: tun.name)
        if settings.masquerade { try table.install() }
        defer { if settings.masquerade { table.remove() } }

        let socketV4 = try UDPSocket(bindingTo: SocketAddress(IPv4Address.any, settings.listenPort),
                                     receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20)
        let socketV6 = try? UDPSocket(bindingTo: SocketAddress(IPv6Address.any, socketV4.localAddress.port),
                                      receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20)
        let loop = try EventLoop()
        let plane = DataPlane(state: state, tun: tun, socketV4: socketV4, socketV6: socketV6, mtu: settings.mtu, logger: logger)
        plane.watchdog = Watchdog(loops: 1)
        let hosts = hostCandidateAddresses((try? LocalAddresses.all()) ?? [])
        let driver = ConnectivityDriver(plane: plane, role: .controlled, hostAddresses: hosts, logger: logger)
        let session = PortalSession<ToGateway, FromGateway>(
            url: settings.url, path: "/api/v1/ws/gateway",
            query: [("public_key", privateKey.publicKey.base64), ("name", settings.name)], token: settings.token, logger: logger)
        let confined = LoopBox(plane, driver: driver, logger: logger) { client, lines in
            session.send(.iceCandidates(ClientCandidates(clientId: client, candidates: lines)))
        }
        let readiness = Readiness()
        var endpoint: MetricsServer?
        if let address = settings.metricsListen {
            let relays = driver.relayPublication
            let metrics = GatewayMetrics { relays.read() }
            plane.metrics = { metrics.publish($0) }
            endpoint = MetricsServer(address: address, readiness: readiness, metrics: metrics, logger: logger)
        }
        try plane.attach(to: loop)
        let thread = try loop.start(name: "fz-gw-loop")
        let control = GatewayControl(confined: confined, loop: loop, netlink: netlink, tunIndex: tun.index, logger: logger)
        logger.info("interface up", metadata: [
            "interface": "\(tun.name)", "port": "\(socketV4.localAddress.port)", "public-key": "\(privateKey.publicKey)",
            "host-candidates": "\(hosts.map { "\($0)" }.joined(separator: ","))",
        ])
        let exit = Mutex<Int32?>(nil)
        let sessionTask = Task.detached {
            do {
                try await session.run { event in await control.handle(event, session: session, readiness: readiness) }
            } catch let refused as SessionRefused {
                logger.critical("the portal refused this gateway: \(refused)")
                exit.withLock { $0 = 1 }
                kill(getpid(), SIGTERM)
            } catch {
                logger.error("portal session ended: \(error)")
            }
        }
        let expiry = Task.detached {
            // Grants end at their expires_at (second resolution on the wire).
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                control.expire()
            }
        }

        let signal = try TerminationSignals.wait()
        logger.info("signal \(signal): stopping")
        readiness.set(false)
        SystemdNotifier.notify("STOPPING=1")
        sessionTask.cancel()
        expiry.cancel()
        endpoint?.stop()
        loop.stop()
        thread.join()
        plane.close(loop: loop)
        netlink.close()
        logger.info("stopped")
        if let code = exit.withLock({ $0 }) {
            if settings.masquerade { table.remove() }
            Glibc.exit(code)
        }
    }

    /// Routing between the tunnel and the Site: IPv4 and IPv6 forwarding on (per network
    /// namespace; a gateway's reason to exist). Logged when not permitted.
    static func enableForwarding(logger: Logger) {
        for path in ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"] {
            // Already on (systemd's ExecStartPre, docker --sysctl): nothing to write, which a
            // read-only /proc/sys (ProtectKernelTunables) would refuse anyway.
            if (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) == "1" { continue }
            do {
                try "1\n".write(toFile: path, atomically: false, encoding: .utf8)
            } catch {
                logger.warning("cannot enable forwarding (\(path)): \(error)")
            }
        }
    }
}

/// The control side of the portal mode: owns `Authorizations` and maps clients to peers.
/// Called from the session's task and the expiry task; every tunnel change runs on the loop.
final class GatewayControl: Sendable {
    private struct State: Sendable {
        var authorizations = Authorizations()
        var ready = false
        var relays: [RelayID: RelayView] = [:]
    }

    private let state = Mutex(State())
    private let confined: LoopBox
    private let loop: EventLoop
    private let netlink: NetlinkBox
    private let tunIndex: Int32
    private let logger: Logger

    init(confined: LoopBox, loop: EventLoop, netlink: RouteNetlinkSocket, tunIndex: Int32, logger: Logger) {
        self.confined = confined
        self.loop = loop
        self.netlink = NetlinkBox(netlink)
        self.tunIndex = tunIndex
        self.logger = logger
    }

    func handle(_ event: SessionEvent<ToGateway>, session: PortalSession<ToGateway, FromGateway>, readiness: Readiness) async {
        switch event {
        case .connected:
            logger.info("connected to the portal")
        case .message(.initialize(let i)):
            let (changes, refused) = state.withLock { $0.authorizations.restore(i.authorizations, now: Self.now()) }
            for (request, refusal) in refused { logger.warning("authorization not restored", metadata: ["request": "\(request)", "reason": "\(refusal)"]) }
            setRelays(state.withLock { s in
                s.relays = Dictionary(i.relays.map { ($0.id, $0) }, uniquingKeysWith: { _, b in b })
                return Array(s.relays.values)
            })
            apply(changes)
            let first = state.withLock { s in defer { s.ready = true }; return !s.ready }
            logger.notice("joined the portal", metadata: [
                "gateway_id": "\(i.gatewayId)", "site_id": "\(i.siteId)", "authorizations": "\(i.authorizations.count)",
                "relays": "\(i.relays.count)",
            ])
            if first {
                readiness.set(true)
                SystemdNotifier.notify("READY=1\nSTATUS=connected to the portal as \(i.gatewayId)")
            }
        case .message(.authorize(let a)):
            switch state.withLock({ $0.authorizations.authorize(a, now: Self.now()) }) {
            case .success(let changes):
                // `authorized` goes out before the engine trickles the gateway's candidates.
                session.send(.authorized(Authorized(requestId: a.requestId)))
                apply(changes)
                logger.info("authorized", metadata: ["client": "\(a.clientId)", "resource": "\(a.resource.id)", "expires_at": "\(a.expiresAt)"])
            case .failure(let refusal):
                logger.warning("authorization refused", metadata: ["request": "\(a.requestId)", "reason": "\(refusal)"])
            }
        case .message(.revoke(let r)):
            apply(state.withLock { $0.authorizations.revoke(client: r.clientId, resource: r.resourceId) })
            logger.info("revoked", metadata: ["client": "\(r.clientId)", "resource": "\(r.resourceId)"])
        case .message(.iceCandidates(let c)):
            let (candidates, rejected) = parseCandidates(c.candidates)
            if !rejected.isEmpty {
                logger.warning("ICE candidates rejected", metadata: ["client": "\(c.clientId)", "reasons": "\(rejected.joined(separator: "; "))"])
            }
            let confined = self.confined
            loop.execute { confined.addRemoteCandidates(candidates, client: c.clientId) }
        case .message(.presence(let p)):
            guard let relayID = p.relayId else { break }
            setRelays(state.withLock { s in
                if p.online, let view = p.relay { s.relays[relayID] = view } else if !p.online { s.relays[relayID] = nil }
                return Array(s.relays.values)
            })
        case .message(.error(let e)):
            logger.warning("portal error", metadata: ["code": "\(e.code)", "message": "\(e.message)"])
        case .message(.pong), .message(.reconnect):
            break
        case .disconnected(let reason):
            logger.warning("portal connection lost; tunnels keep working, reconnecting", metadata: ["reason": "\(reason)"])
        }
    }

    private func setRelays(_ views: [RelayView]) {
        let relays = views.sorted { $0.id < $1.id }.compactMap { NodeRelay($0) }
        let confined = self.confined
        loop.execute { confined.setRelays(relays) }
    }

    func expire() {
        let changes = state.withLock { s -> [Authorizations.Change] in
            guard let next = s.authorizations.nextExpiry, next <= Self.now() else { return [] }
            return s.authorizations.expire(now: Self.now())
        }
        if !changes.isEmpty {
            logger.info("authorizations expired")
            apply(changes)
        }
    }

    /// Applies tunnel changes on the loop thread, in order; routes client addresses to the TUN
    /// device (they vanish with it at exit).
    private func apply(_ changes: [Authorizations.Change]) {
        guard !changes.isEmpty else { return }
        for change in changes {
            if case .add(_, let client) = change {
                for prefix in client.tunnelAddresses {
                    do { try netlink.addRoute(prefix, index: tunIndex) } catch {
                        logger.warning("cannot route \(prefix) to the tunnel: \(error)")
                    }
                }
            }
        }
        let confined = self.confined
        let logger = self.logger
        loop.execute {
            confined.apply(changes, logger: logger)
        }
    }

    static func now() -> UnixTime { UnixTime(seconds: Int64(RealtimeClock.now().seconds)) }
}

/// The data plane, the connectivity engine and the client → peer map, touched only on the loop thread.
final class LoopBox: @unchecked Sendable {
    private let plane: DataPlane
    private let driver: ConnectivityDriver
    private let logger: Logger
    private var peers: [ClientID: PeerID] = [:]
    private var clients: [PeerID: ClientID] = [:]
    /// Candidates that arrived before the client's peer (the portal forwards them as soon as the
    /// authorization exists), applied when it is added.
    private var early: [ClientID: [Candidate]] = [:]
    private var credentials: [PeerID: (local: Connectivity.IceCredentials, remote: Connectivity.IceCredentials)] = [:]

    /// `signal` sends the gateway's candidates for a client to the portal (any thread).
    init(_ plane: DataPlane, driver: ConnectivityDriver, logger: Logger, signal: @escaping @Sendable (ClientID, [String]) -> Void) {
        self.plane = plane
        self.driver = driver
        self.logger = logger
        driver.onEvent = { [unowned self] event in
            switch event {
            case .localCandidate(let peer, let c):
                if let client = self.clients[peer] { signal(client, [c.line]) }
            case .failed(let peer):
                guard let client = self.clients[peer], let ice = self.credentials[peer] else { break }
                // The client asks the portal again after a failure, and the portal hands out the
                // same credentials for the same client connection and gateway: a fresh agent
                // (same credentials, no state) waits for its checks. The WireGuard peer stays.
                logger.warning("no path to the client; waiting for it to try again", metadata: ["client": "\(client)"])
                let now = MonotonicClock.now()
                self.driver.remove(peer, now: now)
                self.driver.connect(peer, local: ice.local, remote: ice.remote, now: now)
            case .relayAllocated(let id, let relayed):
                logger.info("relay allocation", metadata: ["relay": "\(id)", "relayed": "\(relayed)"])
            case .relayLost(let id, let reason):
                logger.warning("relay lost", metadata: ["relay": "\(id)", "reason": "\(reason)"])
            case .path, .disconnected:
                break
            }
        }
    }

    func setRelays(_ relays: [NodeRelay]) { driver.setRelays(relays, now: MonotonicClock.now()) }

    func addRemoteCandidates(_ candidates: [Candidate], client: ClientID) {
        guard let peer = peers[client] else {
            early[client, default: []].append(contentsOf: candidates.prefix(max(0, 32 - (early[client]?.count ?? 0))))
            return
        }
        let now = MonotonicClock.now()
        for c in candidates { driver.addRemoteCandidate(c, for: peer, now: now) }
    }

    func apply(_ changes: [Authorizations.Change], logger: Logger) {
        let now = MonotonicClock.now()
        for change in changes {
            switch change {
            case .add(let id, let client):
                if let old = peers.removeValue(forKey: id) { remove(old, now: now) }
                guard let key = PublicKey(base64: client.publicKey.base64) else { continue }
                let configuration = PeerConfiguration(publicKey: key, presharedKey: WireGuard.PresharedKey(base64: client.presharedKey.base64))
                guard let peer = plane.addPeer(configuration, allowedIPs: client.tunnelAddresses, filter: client.filter) else {
                    logger.warning("cannot add the peer of \(id): its key is in use")
                    continue
                }
                peers[id] = peer
                clients[peer] = id
                let ice = (local: IceCredentials(client.ice.gateway), remote: IceCredentials(client.ice.client))
                credentials[peer] = ice
                driver.connect(peer, local: ice.local, remote: ice.remote, now: now)
                for c in early.removeValue(forKey: id) ?? [] { driver.addRemoteCandidate(c, for: peer, now: now) }
            case .update(let id, let client):
                if let peer = peers[id] { plane.setFilter(client.filter, of: peer) }
            case .remove(let id):
                if let peer = peers.removeValue(forKey: id) { remove(peer, now: now) }
                early[id] = nil
            }
        }
    }

    private func remove(_ peer: PeerID, now: Timestamp) {
        driver.remove(peer, now: now)
        clients[peer] = nil
        credentials[peer] = nil
        plane.removePeer(peer)
    }
}

/// The netlink socket, used by the control side only (one request at a time under the lock).
final class NetlinkBox: @unchecked Sendable {
    private let lock = Mutex(())
    private let socket: RouteNetlinkSocket
    init(_ socket: RouteNetlinkSocket) { self.socket = socket }

    func addRoute(_ prefix: CIDR, index: Int32) throws(SystemError) {
        try lock.withLock { (_) throws(SystemError) in try socket.addRoute(prefix, index: index) }
    }
}
