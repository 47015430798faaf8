import FZCore
import FZTestSupport
import Testing

@testable import Connectivity

/// Two `IceAgent`s wired back to back on a manual clock: a tiny router that delivers their
/// transmits after a fixed one-way delay, with optional loss, a simple NAT in front of either
/// agent, and a switch that cuts every direct (non-relayed) path.
///
/// Relayed candidates are modelled as the relay would behave for ICE: a transmit `.relay(R)` leaves
/// from R after one extra hop, and datagrams to R reach the agent owning R on `.relay(R)`
/// (permissions and channels are the TURN client's business, tested elsewhere).
struct IceNetwork {
    struct NAT {
        var publicIP: IPAddress
        /// RFC 4787 endpoint-dependent mapping (a "symmetric" NAT): a new public port per
        /// destination. Otherwise endpoint-independent.
        var dependent = false
        /// Private source → public port (endpoint-independent mapping).
        var mappings: [SocketAddress: UInt16] = [:]
        var dependentMappings: [SocketAddress: [SocketAddress: UInt16]] = [:]
        var reverse: [UInt16: SocketAddress] = [:]
        /// Destinations each mapping sent to (address-and-port-dependent filtering).
        var contacted: [UInt16: Set<SocketAddress>] = [:]
        var nextPort: UInt16 = 40000
        /// RFC 4787 §5 filtering of inbound datagrams to a mapping.
        enum Filtering: Sendable { case endpointIndependent, addressDependent, addressAndPortDependent }
        var filtering: Filtering = .addressAndPortDependent

        init(publicIP: String, dependent: Bool = false, filtering: Filtering = .addressAndPortDependent) {
            self.publicIP = IPAddress(publicIP)!
            self.dependent = dependent
            self.filtering = filtering
        }

        mutating func outbound(_ source: SocketAddress, to d: SocketAddress) -> SocketAddress {
            let port: UInt16
            if dependent {
                if let p = dependentMappings[source]?[d] {
                    port = p
                } else {
                    port = nextPort
                    nextPort += 1
                    dependentMappings[source, default: [:]][d] = port
                    reverse[port] = source
                }
            } else if let p = mappings[source] {
                port = p
            } else {
                port = nextPort
                nextPort += 1
                mappings[source] = port
                reverse[port] = source
            }
            contacted[port, default: []].insert(d)
            return SocketAddress(ip: publicIP, port: port)
        }

        /// Every mapping times out at once (an idle NAT, a router reboot): the next datagram out
        /// gets a new public port.
        mutating func expireMappings() {
            mappings.removeAll()
            dependentMappings.removeAll()
            reverse.removeAll()
            contacted.removeAll()
        }

        func inbound(to port: UInt16, from s: SocketAddress) -> SocketAddress? {
            guard let inside = reverse[port], let sent = contacted[port] else { return nil }
            switch filtering {
            case .endpointIndependent: return inside
            case .addressDependent: return sent.contains { $0.ip == s.ip } ? inside : nil
            case .addressAndPortDependent: return sent.contains(s) ? inside : nil
            }
        }
    }

    struct Packet {
        var at: Timestamp
        var from: SocketAddress
        var to: SocketAddress
        var bytes: [UInt8]
        var seq: Int
    }

    var clock = ManualClock()
    var agents: [IceAgent]
    var hosts: [[SocketAddress]]
    var relays: [SocketAddress?]
    var nats: [NAT?]
    var delay: Duration = .milliseconds(10)
    var loss = 0.0
    var rng = SplitMix64(seed: 7)
    /// Drops every datagram that neither leaves from nor goes to a relayed address.
    var directCut = false
    /// Calls `noteTraffic` on both agents every 100 ms.
    var traffic = false
    /// With `traffic`: each agent also sends a data datagram on its selected pair every 100 ms,
    /// and arrivals are recorded in `received` (the agent never sees them).
    var data = false
    var received: [[Timestamp]] = [[], []]
    /// Every relay drops everything (a relay restarting).
    var relaysDown = false
    var nextTrafficAt: Timestamp = .zero
    var inFlight: [Packet] = []
    var seq = 0
    var log: [(at: Timestamp, agent: Int, event: IceEvent)] = []
    var sent: [(at: Timestamp, agent: Int)] = []
    /// Loop iterations of `run` (each a timer or delivery instant).
    var wakeups = 0

    var now: Timestamp { clock.now }

    /// Two agents (0 controlling, 1 controlled unless `roles` says otherwise) with the given
    /// host and relayed addresses; candidates are signalled as `candidate:` lines through the
    /// log pump, credentials exchanged up front.
    /// `serverReflexive`: agents behind a NAT also signal the mapping a STUN server at
    /// `stunServer` sees (gathered before the agents start, as the engine would).
    init(hosts: [[String]], relays: [String?] = [nil, nil], nats: [NAT?] = [nil, nil],
         roles: [IceRole] = [.controlling, .controlled], tieBreakers: [UInt64] = [2, 1], serverReflexive: Bool = false) {
        self.hosts = hosts.map { $0.map { SocketAddress($0)! } }
        self.relays = relays.map { $0.flatMap { SocketAddress($0) } }
        self.nats = nats
        agents = (0..<2).map { i in
            IceAgent(config: IceAgentConfig(role: roles[i], local: IceCredentials(ufrag: "ufrag\(i)", password: "password-of-agent-\(i)"),
                                            tieBreaker: tieBreakers[i]))
        }
        let start = clock.now
        for i in 0..<2 {
            agents[i].setRemoteCredentials(agents[1 - i].localCredentials, now: start)
            for h in self.hosts[i] { agents[i].addLocalCandidate(.host(h), now: start) }
            if serverReflexive, self.nats[i] != nil {
                let server = SocketAddress("198.51.100.200:3478")!
                for h in self.hosts[i] {
                    let mapped = self.nats[i]!.outbound(h, to: server)
                    agents[i].addLocalCandidate(.serverReflexive(mapped, base: h, server: server), now: start)
                }
            }
            if let r = self.relays[i] { agents[i].addLocalCandidate(.relayed(r), now: start) }
        }
        pump()
    }

    func isRelay(_ a: SocketAddress) -> Bool { relays.contains(a) }

    /// Drains transmits and events; signals new local candidates to the other agent.
    mutating func pump() {
        var again = true
        while again {
            again = false
            for i in 0..<2 {
                while let t = agents[i].pollTransmit() {
                    again = true
                    sent.append((now, i))
                    send(t, from: i)
                }
                while let e = agents[i].pollEvent() {
                    again = true
                    log.append((now, i, e))
                    if case .newLocalCandidate(let c) = e {
                        // Through the wire format, as the portal carries it.
                        let parsed = try? Candidate(parsing: c.line)
                        #expect(parsed == c)
                        if let parsed { agents[1 - i].addRemoteCandidate(parsed, now: now) }
                    }
                }
            }
        }
    }

    mutating func send(_ t: IceTransmit, from i: Int) {
        var source: SocketAddress
        var hop = delay
        switch t.via {
        case .socket(let s):
            #expect(hosts[i].contains(s), "agent \(i) sent from a socket it does not have: \(s)")
            source = s
            if nats[i] != nil { source = nats[i]!.outbound(s, to: t.destination) }
        case .relay(let r):
            #expect(relays[i] == r)
            source = r
            hop = delay * 2
        }
        if loss > 0, Double(rng.next() % 1_000_000) / 1e6 < loss { return }
        seq += 1
        inFlight.append(Packet(at: now + hop, from: source, to: t.destination, bytes: t.bytes, seq: seq))
    }

    /// Where a datagram to `to` lands: (agent, via), or nil when nothing listens or lets it in.
    mutating func route(_ p: Packet) -> (Int, IceVia)? {
        if directCut, !isRelay(p.from), !isRelay(p.to) { return nil }
        if relaysDown, isRelay(p.from) || isRelay(p.to) { return nil }
        for i in 0..<2 {
            if relays[i] == p.to { return (i, .relay(p.to)) }
            if let nat = nats[i] {
                if nat.publicIP == p.to.ip, let inside = nat.inbound(to: p.to.port, from: p.from) { return (i, .socket(inside)) }
            } else if hosts[i].contains(p.to) {
                return (i, .socket(p.to))
            }
        }
        return nil
    }

    static let dataMarker: UInt8 = 0xDA

    mutating func deliver(_ p: Packet) {
        guard let (i, via) = route(p) else { return }
        if p.bytes.first == Self.dataMarker {
            received[i].append(now)
            return
        }
        let consumed = agents[i].handleInbound(p.bytes, from: p.from, via: via, now: now)
        #expect(consumed)
    }

    /// Runs the network for `seconds`, firing timers and deliveries in time order.
    mutating func run(seconds: Double) {
        let end = now + .nanoseconds(Int64(seconds * 1e9))
        var spins = 0
        while true {
            var next = min(agents[0].nextDeadline, agents[1].nextDeadline)
            wakeups += 1
            // A deadline that stays in the past would spin a real event loop: fail, don't hang.
            if next <= now { spins += 1 } else { spins = 0 }
            if spins > 1000 {
                Issue.record("nextDeadline stuck at \(next) (now \(now))")
                return
            }
            if let p = inFlight.min(by: { ($0.at, $0.seq) < ($1.at, $1.seq) }) { next = min(next, p.at) }
            if traffic { next = min(next, nextTrafficAt) }
            guard next <= end else { break }
            if next > now { clock.advance(by: next - now) }
            let due = inFlight.filter { [now] in $0.at <= now }.sorted { ($0.at, $0.seq) < ($1.at, $1.seq) }
            let t = now
            inFlight.removeAll { $0.at <= t }
            for p in due { deliver(p) }
            if traffic, now >= nextTrafficAt {
                for i in 0..<2 { agents[i].noteTraffic(now: now) }
                if data {
                    for i in 0..<2 {
                        guard let pair = agents[i].selectedPair else { continue }
                        send(IceTransmit(via: pair.via, destination: pair.remote.address, bytes: [Self.dataMarker, UInt8(i)]), from: i)
                    }
                }
                nextTrafficAt = now + .milliseconds(100)
            }
            for i in 0..<2 where agents[i].nextDeadline <= now { agents[i].handleTimeout(now: now) }
            pump()
        }
        if end > now { clock.advance(by: end - now) }
    }

    /// The longest time between data arrivals at agent `i` within [from, to].
    func longestGap(_ i: Int, from: Timestamp, to: Timestamp) -> Duration {
        var last = from
        var gap = Duration.zero
        for t in received[i] where t >= from && t <= to {
            gap = max(gap, t - last)
            last = t
        }
        return max(gap, to - last)
    }

    func events(_ i: Int, after t: Timestamp = .zero) -> [IceEvent] {
        log.filter { $0.agent == i && $0.at >= t }.map(\.event)
    }

    func firstSelected(_ i: Int, after t: Timestamp = .zero, where ok: (IcePair) -> Bool = { _ in true }) -> Timestamp? {
        log.first {
            guard $0.agent == i, $0.at >= t, case .selected(let p) = $0.event else { return false }
            return ok(p)
        }?.at
    }

    func selections(_ i: Int, after t: Timestamp = .zero) -> [IcePair] {
        log.compactMap { e -> IcePair? in
            guard e.agent == i, e.at >= t, case .selected(let p) = e.event else { return nil }
            return p
        }
    }

    /// The nominated pairs of both agents describe the same path (each seen from its side).
    func agreeOnNominated() -> Bool {
        guard let a = agents[0].nominated, let b = agents[1].nominated else { return false }
        return agentAddress(0, a) == b.remote.address && agentAddress(1, b) == a.remote.address
    }

    /// The address the peer sees a pair's local end at (relayed address, or the NAT mapping).
    func agentAddress(_ i: Int, _ p: IcePair) -> SocketAddress {
        switch p.via {
        case .relay(let r): return r
        case .socket(let s):
            guard let nat = nats[i] else { return s }
            // An endpoint-dependent mapping: the port this socket got for this destination.
            let port = nat.dependent ? nat.dependentMappings[s]?[p.remote.address] : nat.mappings[s]
            return port.map { SocketAddress(ip: nat.publicIP, port: $0) } ?? s
        }
    }
}
