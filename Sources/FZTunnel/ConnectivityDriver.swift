import Connectivity
import FZCore
import FZLinux
import Logging
import Synchronization
import Tunnel
import WireGuard

/// A peer's link as `status` shows it: readable from any thread.
public struct LinkStatus: Sendable, Equatable {
    public var path: NodePath
    /// `direct 198.18.0.7:51820` or `relayed via NAME` (the relay whose allocation carries it;
    /// also when only the peer's side is relayed: the peer's relay then).
    public var summary: String
    public var relayName: String?
    public var rtt: Duration?
    /// Monotonic time the path was taken.
    public var since: Timestamp
    public var bytesIn: UInt64
    public var bytesOut: UInt64
}

/// The connectivity engine on the data plane's loop: a `ConnectivityNode` keyed by the data
/// plane's `PeerID`s, fed by the data plane's connectivity hook, its timers run as the data plane's
/// companion, its transmits sent on the shared sockets, and its path choices applied to the
/// peers (`setPath`). Events the control side needs (candidates to signal, failures) go to
/// `onEvent`.
///
/// Loop-confined, like the data plane: call everything on the loop thread (the control side hops
/// over with `EventLoop.execute`), except `links()`, which reads a copy under a lock.
public final class ConnectivityDriver: DataPlaneCompanion {
    public let plane: DataPlane
    public private(set) var node: ConnectivityNode<PeerID>
    /// Node events, on the loop thread, after the driver applied paths to the data plane.
    public var onEvent: ((NodeEvent<PeerID>) -> Void)?
    private let logger: Logger
    private var sockets: [AddressFamily: SocketAddress] = [:]
    private var lastBytes: [PeerID: (rx: UInt64, tx: UInt64)] = [:]
    private var nextTrafficCheck: Timestamp = .distantFuture
    /// How often data counters are compared to tell the agents that traffic flows.
    private let trafficInterval: Duration = .milliseconds(200)
    private let published = Mutex<[PeerID: LinkStatus]>([:])
    private var current: [PeerID: LinkStatus] = [:]
    /// What `relays()` returns, readable from any thread (e.g. a metrics endpoint) without the driver.
    public let relayPublication = RelayPublication()

    /// Installs itself as `plane`'s connectivity hook and companion; call before `plane.attach`.
    /// `hostAddresses`: what to announce as host candidates (the machine's addresses, minus the
    /// tunnel's own, loopback and link-local).
    public init(plane: DataPlane, role: IceRole, hostAddresses: [IPAddress], logger: Logger,
                tune: (inout NodeConfig) -> Void = { _ in }) {
        self.plane = plane
        self.logger = logger
        var bound: [SocketAddress] = []
        var byFamily: [AddressFamily: SocketAddress] = [:]
        for s in [plane.socketV4, plane.socketV6] {
            guard let s else { continue }
            byFamily[s.localAddress.family] = s.localAddress
            bound.append(s.localAddress)
        }
        sockets = byFamily
        var config = NodeConfig(role: role, sockets: bound,
                                hostAddresses: hostAddresses.filter { byFamily[$0.family] != nil })
        config.software = "fz"
        tune(&config)
        node = ConnectivityNode(config: config)
        plane.connectivity = { [unowned self] bytes, source, now in self.inbound(bytes, from: source, now: now) }
        plane.companion = self
    }

    // MARK: Control (loop thread)

    public func setRelays(_ relays: [NodeRelay], now: Timestamp) {
        node.setRelays(relays, now: now)
        flush(now: now)
    }

    /// Starts ICE to the data plane's peer `peer` (added by the caller, with its AllowedIPs and
    /// filter; it has no path until ICE selects one, so its packets wait in WireGuard's queue).
    public func connect(_ peer: PeerID, local: IceCredentials, remote: IceCredentials, now: Timestamp) {
        node.connect(peer, local: local, remote: remote, now: now)
        lastBytes[peer] = nil
        if nextTrafficCheck == .distantFuture { nextTrafficCheck = now + trafficInterval }
        flush(now: now)
    }

    public func addRemoteCandidate(_ c: Candidate, for peer: PeerID, now: Timestamp) {
        node.addRemoteCandidate(c, for: peer, now: now)
        flush(now: now)
    }

    /// Forgets the connection; the caller removes the data plane's peer.
    public func remove(_ peer: PeerID, now: Timestamp) {
        node.remove(peer, now: now)
        lastBytes[peer] = nil
        current[peer] = nil
        publish()
        flush(now: now)
    }

    /// The links of every connected peer (any thread).
    public func links() -> [PeerID: LinkStatus] { published.withLock { $0 } }

    /// The relays as last measured and the engine's counters (any thread; refreshed every 200 ms
    /// while there are peers, and on every relay event).
    public func relays() -> (relays: [NodeRelayStatus], stats: NodeStats) { relayPublication.read() }

    private func publishRelays() { relayPublication.publish(node.relayStatus, node.stats) }

    // MARK: Companion

    public var nextDeadline: Timestamp { min(node.nextDeadline, nextTrafficCheck) }

    public func handleTimeout(now: Timestamp) {
        if node.nextDeadline <= now { node.handleTimeout(now: now) }
        if now >= nextTrafficCheck { checkTraffic(now: now) }
        flush(now: now)
    }

    /// Tells the agents whose peers moved data since the last look that traffic flows (fast
    /// liveness), and refreshes the published byte counts.
    private func checkTraffic(now: Timestamp) {
        publishRelays()
        let peers = node.peers
        nextTrafficCheck = peers.isEmpty ? .distantFuture : now + trafficInterval
        var changed = false
        for peer in peers {
            guard let s = plane.state.device.stats(of: peer) else { continue }
            let previous = lastBytes[peer]
            lastBytes[peer] = (s.bytesReceived, s.bytesSent)
            if previous == nil || previous!.rx != s.bytesReceived || previous!.tx != s.bytesSent {
                node.noteTraffic(peer, now: now)
                if current[peer] != nil {
                    current[peer]!.bytesIn = s.bytesReceived
                    current[peer]!.bytesOut = s.bytesSent
                    current[peer]!.rtt = node.agent(of: peer)?.selectedRTT
                    changed = true
                }
            }
        }
        if changed { publish() }
    }

    // MARK: Datagrams

    private func inbound(_ bytes: UnsafeRawBufferPointer, from source: SocketAddress, now: Timestamp) -> ConnectivityVerdict {
        guard let socket = sockets[source.family] else { return .consumed }
        let verdict: ConnectivityVerdict
        switch node.handleInbound(bytes, from: source, socket: socket, now: now) {
        case .handled, .notMine:
            verdict = .consumed
        case .relayedData(let payload, _, let relay, let channel):
            verdict = .wireGuard(payload: payload, relay: relay, channel: channel)
        }
        flush(now: now)
        return verdict
    }

    private func flush(now: Timestamp) {
        while let t = node.pollTransmit() {
            t.bytes.withUnsafeBytes { _ = plane.send($0, to: t.destination) }
        }
        while let e = node.pollEvent() {
            switch e {
            case .path(let peer, let path, let pair): apply(path, pair: pair, to: peer, now: now)
            case .relayAllocated, .relayLost: publishRelays()
            default: break
            }
            onEvent?(e)
        }
    }

    private func apply(_ path: NodePath, pair: IcePair, to peer: PeerID, now: Timestamp) {
        guard plane.state.device.contains(peer) else { return }
        switch path {
        case .direct(let a): plane.setPath(.direct(a), of: peer)
        case .relayed(let relay, let channel): plane.setPath(.relayed(relay: relay, channel: channel), of: peer)
        }
        let relayName: String?
        switch path {
        case .relayed(let server, _): relayName = node.relay(at: server)?.name
        case .direct:
            // Our side is direct; the pair may still go through the peer's relay.
            relayName = pair.remote.isRelayed ? (node.relay(relayed: pair.remote.address)?.name ?? "the peer's relay") : nil
        }
        let summary = relayName.map { "relayed via \($0)" } ?? "direct \(pair.remote.address)"
        let s = plane.state.device.stats(of: peer) ?? PeerStatistics()
        current[peer] = LinkStatus(path: path, summary: summary, relayName: relayName, rtt: node.agent(of: peer)?.selectedRTT,
                                   since: now, bytesIn: s.bytesReceived, bytesOut: s.bytesSent)
        publish()
        logger.info("path", metadata: ["peer": "\(plane.state.device[peer].publicKey)", "path": "\(summary)"])
    }

    private func publish() {
        let copy = current
        published.withLock { $0 = copy }
    }
}

/// The engine's relays and counters as the loop thread last published them.
public final class RelayPublication: Sendable {
    private let latest = Mutex<(relays: [NodeRelayStatus], stats: NodeStats)>(([], NodeStats()))
    public init() {}
    func publish(_ relays: [NodeRelayStatus], _ stats: NodeStats) { latest.withLock { $0 = (relays, stats) } }
    public func read() -> (relays: [NodeRelayStatus], stats: NodeStats) { latest.withLock { $0 } }
}
