import Connectivity
import FZControl
import FZControlClient
import FZCore
import FZLinux
import FZTunnel
import Logging
import Synchronization
import Tunnel
import WireGuard

/// What the engine tells the client daemon.
public enum EngineLinkEvent: Sendable {
    /// Candidates to send to the portal for this gateway (`ice_candidates`).
    case localCandidates(GatewayID, [String])
    /// ICE found a path: the tunnel can carry packets (held ones are released).
    case connected(GatewayID)
    /// The path changed (upgrade, failover): for the log and `status`.
    case pathChanged(GatewayID, String)
    /// Every path is gone and ICE gave up: ask the portal again.
    case failed(GatewayID)
}

/// A gateway link as `fz-client status` shows it.
public struct EngineLinkStatus: Sendable, Equatable {
    public var gateway: GatewayID
    public var path: String
    public var rttMilliseconds: Double?
    public var bytesIn: UInt64
    public var bytesOut: UInt64
    /// Wall-clock seconds (Unix) since the path was taken.
    public var since: Int64
}

/// The client's side of the connectivity engine: one WireGuard peer and one ICE connection
/// (controlling) per gateway on the shared data plane, driven from the control side (any thread;
/// every change hops to the loop with `EventLoop.execute`).
public final class EngineConnectivity: Sendable {
    private let loop: EventLoop
    private let box: EngineBox
    private let wallOffset: Int64

    /// `onEvent` is called on the loop thread; it must not block.
    public init(plane: DataPlane, loop: EventLoop, hostAddresses: [IPAddress], logger: Logger,
                onEvent: @escaping @Sendable (EngineLinkEvent) -> Void) {
        self.loop = loop
        let driver = ConnectivityDriver(plane: plane, role: .controlling, hostAddresses: hostAddresses, logger: logger)
        box = EngineBox(plane: plane, driver: driver, logger: logger, onEvent: onEvent)
        let (seconds, _) = RealtimeClock.now()
        wallOffset = Int64(seconds) - Int64(MonotonicClock.now().nanoseconds / 1_000_000_000)
    }

    /// Connects to a gateway (or keeps the connection when keys and credentials are unchanged,
    /// updating its prefixes): a WireGuard peer whose AllowedIPs are `allowedIPs`, and ICE with
    /// the portal's credentials.
    public func connect(gateway: GatewayID, publicKey: WireGuardKey, presharedKey: FZControl.PresharedKey, ice: FZControl.IcePair,
                        relays: [RelayView], allowedIPs: [CIDR]) {
        let nodeRelays = relays.compactMap { NodeRelay($0) }
        let box = self.box
        loop.execute {
            box.setRelays(nodeRelays)
            box.connect(gateway: gateway, publicKey: publicKey, presharedKey: presharedKey, ice: ice, allowedIPs: allowedIPs)
        }
    }

    public func setAllowedIPs(_ prefixes: [CIDR], gateway: GatewayID) {
        let box = self.box
        loop.execute { box.setAllowedIPs(prefixes, gateway: gateway) }
    }

    public func addRemoteCandidates(_ lines: [String], gateway: GatewayID) -> [String] {
        let (candidates, rejected) = parseCandidates(lines)
        let box = self.box
        loop.execute { box.addRemoteCandidates(candidates, gateway: gateway) }
        return rejected
    }

    public func disconnect(gateway: GatewayID) {
        let box = self.box
        loop.execute { box.disconnect(gateway: gateway) }
    }

    public func setRelays(_ relays: [RelayView]) {
        let nodeRelays = relays.compactMap { NodeRelay($0) }
        let box = self.box
        loop.execute { box.setRelays(nodeRelays) }
    }

    /// The links with a path, for `status`.
    public func status() -> [EngineLinkStatus] {
        box.status(wallOffset: wallOffset)
    }
}

/// The loop-confined half: peers by gateway, the driver, early candidates.
final class EngineBox: @unchecked Sendable {
    private let plane: DataPlane
    private let driver: ConnectivityDriver
    private let logger: Logger
    private let onEvent: @Sendable (EngineLinkEvent) -> Void
    private struct Link {
        var peer: PeerID
        var publicKey: WireGuardKey
        var presharedKey: FZControl.PresharedKey
        var ice: FZControl.IcePair
    }
    private var links: [GatewayID: Link] = [:]
    private var gateways: [PeerID: GatewayID] = [:]
    private var early: [GatewayID: [Candidate]] = [:]
    private var relays: [String: NodeRelay] = [:]
    /// Read by `status` from the control side.
    private let names = Mutex<[PeerID: GatewayID]>([:])

    init(plane: DataPlane, driver: ConnectivityDriver, logger: Logger, onEvent: @escaping @Sendable (EngineLinkEvent) -> Void) {
        self.plane = plane
        self.driver = driver
        self.logger = logger
        self.onEvent = onEvent
        driver.onEvent = { [unowned self] e in self.handle(e) }
    }

    private func handle(_ e: NodeEvent<PeerID>) {
        switch e {
        case .localCandidate(let peer, let c):
            if let g = gateways[peer] { onEvent(.localCandidates(g, [c.line])) }
        case .path(let peer, _, _):
            guard let g = gateways[peer] else { return }
            let summary = driver.links()[peer]?.summary ?? "connected"
            onEvent(.connected(g))
            onEvent(.pathChanged(g, summary))
        case .failed(let peer):
            if let g = gateways[peer] { onEvent(.failed(g)) }
        case .disconnected(let peer):
            if let g = gateways[peer] { logger.warning("every path to the gateway stopped answering", metadata: ["gateway": "\(g)"]) }
        case .relayAllocated(let id, let relayed):
            logger.info("relay allocation", metadata: ["relay": "\(id)", "relayed": "\(relayed)"])
        case .relayLost(let id, let reason):
            logger.warning("relay lost", metadata: ["relay": "\(id)", "reason": "\(reason)"])
        }
    }

    /// The relays to use: `list` replaces what was known when `replace`, else is merged in by id
    /// (later credentials win).
    func setRelays(_ list: [NodeRelay], replace: Bool = false) {
        if replace { relays = [:] }
        for r in list { relays[r.id] = r }
        driver.setRelays(relays.values.sorted { $0.id < $1.id }, now: MonotonicClock.now())
    }

    func connect(gateway: GatewayID, publicKey: WireGuardKey, presharedKey: FZControl.PresharedKey, ice: FZControl.IcePair,
                 allowedIPs: [CIDR]) {
        let now = MonotonicClock.now()
        if let l = links[gateway], l.publicKey == publicKey, l.presharedKey == presharedKey, l.ice == ice {
            plane.setAllowedIPs(allowedIPs, of: l.peer)
            return
        }
        disconnect(gateway: gateway, keepEarly: true)
        guard let key = PublicKey(base64: publicKey.base64), let psk = WireGuard.PresharedKey(base64: presharedKey.base64) else {
            logger.warning("access_granted with an unusable key ignored", metadata: ["gateway": "\(gateway)"])
            return
        }
        // No persistent keepalive: ICE's consent checks keep the NAT mappings of the path.
        let configuration = PeerConfiguration(publicKey: key, presharedKey: psk)
        guard let peer = plane.addPeer(configuration, allowedIPs: allowedIPs) else {
            logger.warning("cannot add the gateway's peer: its key is in use", metadata: ["gateway": "\(gateway)"])
            return
        }
        links[gateway] = Link(peer: peer, publicKey: publicKey, presharedKey: presharedKey, ice: ice)
        gateways[peer] = gateway
        names.withLock { $0[peer] = gateway }
        driver.connect(peer, local: Connectivity.IceCredentials(ice.client), remote: Connectivity.IceCredentials(ice.gateway), now: now)
        for c in early.removeValue(forKey: gateway) ?? [] { driver.addRemoteCandidate(c, for: peer, now: now) }
    }

    func setAllowedIPs(_ prefixes: [CIDR], gateway: GatewayID) {
        guard let l = links[gateway] else { return }
        plane.setAllowedIPs(prefixes, of: l.peer)
    }

    func addRemoteCandidates(_ candidates: [Candidate], gateway: GatewayID) {
        guard let l = links[gateway] else {
            // The portal may forward the gateway's candidates before access_granted arrives.
            let room = max(0, 32 - (early[gateway]?.count ?? 0))
            early[gateway, default: []].append(contentsOf: candidates.prefix(room))
            return
        }
        let now = MonotonicClock.now()
        for c in candidates { driver.addRemoteCandidate(c, for: l.peer, now: now) }
    }

    func disconnect(gateway: GatewayID, keepEarly: Bool = false) {
        if !keepEarly { early[gateway] = nil }
        guard let l = links.removeValue(forKey: gateway) else { return }
        driver.remove(l.peer, now: MonotonicClock.now())
        gateways[l.peer] = nil
        names.withLock { $0[l.peer] = nil }
        plane.removePeer(l.peer)
    }

    func status(wallOffset: Int64) -> [EngineLinkStatus] {
        let byPeer = names.withLock { $0 }
        return driver.links().compactMap { peer, link in
            guard let g = byPeer[peer] else { return nil }
            return EngineLinkStatus(gateway: g, path: link.summary, rttMilliseconds: link.rtt.map { Double($0.components.attoseconds) / 1e15 + Double($0.components.seconds) * 1000 },
                                    bytesIn: link.bytesIn, bytesOut: link.bytesOut,
                                    since: wallOffset + Int64(link.since.nanoseconds / 1_000_000_000))
        }.sorted { $0.gateway < $1.gateway }
    }
}
