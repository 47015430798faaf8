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

/// `fz-client run`'s settings, checked before anything starts (errors name the flag).
public struct ClientSettings: Sendable {
    public var url: PortalURL
    public var token: String
    public var name: String
    public var stateDirectory: StateDirectory
    public var interfaceName: String
    public var mtu: Int
    public var offload: Bool
}

/// The client daemon: the key from the state directory, a TUN device with the tunnel addresses
/// of `init` and a route per CIDR/IP resource, the data plane and the connectivity engine on
/// one loop thread, the portal session (`/api/v1/ws/client`) on Swift concurrency, and the
/// status socket. Decisions are `ClientController`'s; `ClientCore` carries them out on the loop.
public enum ClientDaemon {
    public static func run(_ settings: ClientSettings, logger: Logger) throws {
        try settings.stateDirectory.prepare()
        let privateKey = try settings.stateDirectory.loadOrCreateKey()
        try TerminationSignals.block()
        let (seconds, nanoseconds) = RealtimeClock.now()
        let wallClock = WireGuard.WallClock(anchor: TAI64N(unixSeconds: seconds, nanoseconds: nanoseconds), at: MonotonicClock.now())
        let state = TunnelState(device: Device(privateKey: privateKey, wallClock: wallClock))

        let tun = try TunDevice(name: settings.interfaceName, offload: settings.offload)
        let netlink = try RouteNetlinkSocket()
        try netlink.setLink(index: tun.index, up: false, mtu: settings.mtu)
        try netlink.setLink(index: tun.index, up: true, mtu: nil)
        let socketV4 = try UDPSocket(bindingTo: SocketAddress(IPv4Address.any, 0), receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20)
        let socketV6 = try? UDPSocket(bindingTo: SocketAddress(IPv6Address.any, socketV4.localAddress.port),
                                      receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20)
        let loop = try EventLoop()
        let plane = DataPlane(state: state, tun: tun, socketV4: socketV4, socketV6: socketV6, mtu: settings.mtu, logger: logger)
        plane.watchdog = Watchdog(loops: 1)
        let hosts = hostCandidateAddresses((try? LocalAddresses.all()) ?? [])
        let session = PortalSession<ToClient, FromClient>(
            url: settings.url, path: "/api/v1/ws/client",
            query: [("public_key", privateKey.publicKey.base64), ("name", settings.name)], token: settings.token, logger: logger)
        let core = ClientCore(plane: plane, loop: loop, netlink: netlink, tunIndex: tun.index, interfaceName: tun.name,
                              hostAddresses: hosts, logger: logger) { message in session.send(message) }
        try plane.attach(to: loop)
        let thread = try loop.start(name: "fz-client-loop")
        let status = try UnixStatusServer(path: settings.stateDirectory.statusSocketPath) { core.statusJSON() }
        logger.info("interface up", metadata: [
            "interface": "\(tun.name)", "port": "\(socketV4.localAddress.port)", "public-key": "\(privateKey.publicKey)",
            "host-candidates": "\(hosts.map { "\($0)" }.joined(separator: ","))",
        ])

        let exit = Mutex<Int32?>(nil)
        let sessionTask = Task.detached {
            do {
                try await session.run { event in
                    switch event {
                    case .connected:
                        logger.info("connected to the portal")
                        core.setPortal(connected: true)
                    case .message(let m):
                        if case .error(let e) = m { logger.warning("portal error", metadata: ["code": "\(e.code)", "message": "\(e.message)"]) }
                        loop.execute { core.portal(m) }
                    case .disconnected(let reason):
                        core.setPortal(connected: false)
                        loop.execute { core.portalLost() }
                        logger.warning("portal connection lost; tunnels keep working, reconnecting", metadata: ["reason": "\(reason)"])
                    }
                }
            } catch let refused as SessionRefused {
                logger.critical("the portal refused this client: \(refused)")
                exit.withLock { $0 = 1 }
                kill(getpid(), SIGTERM)
            } catch {
                logger.error("portal session ended: \(error)")
            }
        }

        let signal = try TerminationSignals.wait()
        logger.info("signal \(signal): stopping")
        SystemdNotifier.notify("STOPPING=1")
        sessionTask.cancel()
        status.close()
        loop.stop()
        thread.join()
        // Closing the TUN descriptor removes the interface, its addresses and routes.
        plane.close(loop: loop)
        netlink.close()
        logger.info("stopped")
        if let code = exit.withLock({ $0 }) { Glibc.exit(code) }
    }
}

/// The loop-confined half of the daemon: the controller, the engine's peers, the netlink socket,
/// and what `status` reads (published under a lock after every change).
final class ClientCore: DataPlaneCompanion, @unchecked Sendable {
    private var controller = ClientController()
    private let plane: DataPlane
    private let loop: EventLoop
    private let netlink: RouteNetlinkSocket
    private let tunIndex: Int32
    private let interfaceName: String
    private let driver: ConnectivityDriver
    private var box: EngineBox!
    private let logger: Logger
    private let send: @Sendable (FromClient) -> Void
    private var ready = false
    private let wallOffset: Int64
    private let published = Mutex<Published>(Published())

    struct Published: Sendable {
        var portalConnected = false
        var clientId: ClientID?
        var tunnel: TunnelAddresses?
        var resources: [ClientController.ResourceStatus] = []
    }

    init(plane: DataPlane, loop: EventLoop, netlink: RouteNetlinkSocket, tunIndex: Int32, interfaceName: String,
         hostAddresses: [IPAddress], logger: Logger, send: @escaping @Sendable (FromClient) -> Void) {
        self.plane = plane
        self.loop = loop
        self.netlink = netlink
        self.tunIndex = tunIndex
        self.interfaceName = interfaceName
        self.logger = logger
        self.send = send
        let (seconds, _) = RealtimeClock.now()
        wallOffset = Int64(seconds) - Int64(MonotonicClock.now().nanoseconds / 1_000_000_000)
        driver = ConnectivityDriver(plane: plane, role: .controlling, hostAddresses: hostAddresses, logger: logger)
        box = EngineBox(plane: plane, driver: driver, logger: logger) { [unowned self] event in self.engine(event) }
        // The driver made itself the companion; this one runs the controller's timers and its.
        plane.companion = self
        plane.unrouted = { [unowned self] packet in self.unrouted(packet) }
    }

    // MARK: inputs (loop thread)

    func portal(_ message: ToClient) {
        let now = MonotonicClock.now()
        let wall = UnixTime(seconds: Int64(RealtimeClock.now().seconds))
        switch message {
        case .initialize(let i):
            logger.notice("joined the portal", metadata: [
                "client_id": "\(i.clientId)", "ipv4": "\(i.tunnel.ipv4)", "ipv6": "\(i.tunnel.ipv6)",
                "resources": "\(i.resources.count)", "relays": "\(i.relays.count)",
            ])
            published.withLock { $0.clientId = i.clientId }
        case .accessGranted(let g):
            logger.info("access granted", metadata: ["resource": "\(g.resourceId)", "gateway": "\(g.gatewayId)", "expires_at": "\(g.expiresAt)"])
        case .accessDenied(let d):
            logger.notice("access denied", metadata: ["resource": "\(d.resourceId)", "reason": "\(d.reason)"])
        case .presence(let p) where p.gatewayId != nil && !p.online:
            logger.notice("gateway offline", metadata: ["gateway": "\(p.gatewayId!)"])
        default:
            break
        }
        perform(controller.handle(message, now: now, wall: wall))
        if case .initialize(let i) = message, !ready {
            ready = true
            SystemdNotifier.notify("READY=1\nSTATUS=connected to the portal as \(i.clientId)")
        }
    }

    func setPortal(connected: Bool) { published.withLock { $0.portalConnected = connected } }

    func portalLost() { perform(controller.portalLost(now: MonotonicClock.now())) }

    private func unrouted(_ packet: UnsafeRawBufferPointer) {
        perform(controller.unrouted(Array(packet), now: MonotonicClock.now()))
    }

    private func engine(_ event: EngineLinkEvent) {
        let now = MonotonicClock.now()
        switch event {
        case .localCandidates(let g, let lines):
            perform(controller.link(g, .localCandidates(lines), now: now))
        case .connected(let g):
            perform(controller.link(g, .connected, now: now))
        case .pathChanged(let g, let summary):
            logger.info("path to the gateway", metadata: ["gateway": "\(g)", "path": "\(summary)"])
        case .failed(let g):
            logger.warning("no path to the gateway; asking the portal again", metadata: ["gateway": "\(g)"])
            perform(controller.link(g, .failed, now: now))
        }
    }

    // MARK: companion: the engine's timers and the controller's

    var nextDeadline: Timestamp { min(driver.nextDeadline, controller.nextDeadline) }

    func handleTimeout(now: Timestamp) {
        if driver.nextDeadline <= now { driver.handleTimeout(now: now) }
        if controller.nextDeadline <= now { perform(controller.handleTimeout(now: now)) }
    }

    // MARK: actions

    private func perform(_ actions: [ClientController.Action]) {
        for action in actions {
            switch action {
            case .send(let m):
                send(m)
            case .setAddresses(let t):
                for (ip, length) in [(IPAddress.v4(t.ipv4), 32), (.v6(t.ipv6), 128)] {
                    guard let a = InterfaceAddress(ip: ip, prefixLength: length) else { continue }
                    do { try netlink.addAddress(a, index: tunIndex) } catch where error.errno == EEXIST {} catch {
                        logger.error("cannot add the tunnel address \(a) to \(interfaceName): \(error)")
                    }
                }
            case .addRoute(let c):
                do { try netlink.addRoute(c, index: tunIndex) } catch { logger.warning("cannot route \(c) to \(interfaceName): \(error)") }
            case .removeRoute(let c):
                do { try netlink.deleteRoute(c, index: tunIndex) } catch { logger.warning("cannot remove the route \(c): \(error)") }
            case .setRelays(let views):
                box.setRelays(views.compactMap { NodeRelay($0) }, replace: true)
            case .connect(let g, let key, let psk, let ice, let allowed):
                box.connect(gateway: g, publicKey: key, presharedKey: psk, ice: ice, allowedIPs: allowed)
            case .setAllowedIPs(let g, let prefixes):
                box.setAllowedIPs(prefixes, gateway: g)
            case .addCandidates(let g, let lines):
                let (candidates, rejected) = parseCandidates(lines)
                if !rejected.isEmpty { logger.warning("ICE candidates rejected", metadata: ["gateway": "\(g)", "reasons": "\(rejected.joined(separator: "; "))"]) }
                box.addRemoteCandidates(candidates, gateway: g)
            case .disconnect(let g):
                box.disconnect(gateway: g)
            case .release(let packets):
                plane.sendOutgoing(packets)
            case .refuse(let packets):
                for p in packets {
                    guard let reply = Unreachable.reply(to: p) else { continue }
                    reply.withUnsafeBytes { plane.writeInbound($0) }
                }
            }
        }
        let resources = controller.status
        let tunnel = controller.tunnel
        published.withLock {
            $0.resources = resources
            $0.tunnel = tunnel
        }
    }

    // MARK: status (any thread)

    func statusJSON() -> [UInt8] {
        let p = published.withLock { $0 }
        let links = Dictionary(box.status(wallOffset: wallOffset).map { ($0.gateway, $0) }, uniquingKeysWith: { a, _ in a })
        var report = ClientStatusReport(
            interface: interfaceName, clientId: p.clientId?.description, portal: p.portalConnected ? "connected" : "disconnected",
            ipv4: p.tunnel.map { "\($0.ipv4)" }, ipv6: p.tunnel.map { "\($0.ipv6)" }, resources: [])
        for r in p.resources {
            var s = ClientStatusReport.Resource(id: r.resource.id.description, name: r.resource.name, address: "\(r.resource.address)",
                                                state: "idle")
            switch r.access {
            case .requesting?: s.state = "requesting"
            case .denied(let reason, _)?:
                s.state = "denied"
                s.reason = reason.rawValue
            case .granted(let g, _)?:
                s.gateway = g.description
                s.state = r.connected ? "connected" : "connecting"
                if let l = links[g] {
                    s.path = l.path
                    s.rttMs = l.rttMilliseconds.map { ($0 * 100).rounded() / 100 }
                    s.since = l.since
                    s.bytesIn = l.bytesIn
                    s.bytesOut = l.bytesOut
                }
            case nil: break
            }
            report.resources.append(s)
        }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(report)) ?? Data("{}".utf8)) + [0x0A]
    }
}

/// What `fz-client status --json` prints.
public struct ClientStatusReport: Codable, Sendable {
    public var interface: String
    public var clientId: String?
    public var portal: String
    public var ipv4: String?
    public var ipv6: String?
    public var resources: [Resource]

    public struct Resource: Codable, Sendable {
        public var id: String
        public var name: String
        public var address: String
        /// idle, requesting, connecting, connected, denied.
        public var state: String
        public var gateway: String?
        /// `direct ADDRESS` or `relayed via RELAY`.
        public var path: String?
        public var rttMs: Double?
        public var since: Int64?
        public var bytesIn: UInt64?
        public var bytesOut: UInt64?
        public var reason: String?
    }
}
