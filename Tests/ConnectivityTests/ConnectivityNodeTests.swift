import FZCore
import FZTestSupport
import STUN
import TURN
import Testing

@testable import Connectivity

/// A small network for `ConnectivityNode` on a manual clock: two nodes on public addresses, relays
/// running the real sans-IO `TURNServer`, per-host one-way delays, and a firewall that can block
/// traffic between two addresses or cut a host. (The NAT matrix has its own simulator.)
struct NodeNet {
    struct Relay {
        var address: SocketAddress
        var server: TURNServer<NoSockets>
        var delay: Duration
        var up = true
    }

    struct InFlight {
        var at: Timestamp
        var seq: Int
        var from: SocketAddress
        var to: SocketAddress
        var bytes: [UInt8]
    }

    var clock = ManualClock()
    var nodes: [ConnectivityNode<String>]
    var addresses: [SocketAddress]
    var relays: [Relay] = []
    var queue: [InFlight] = []
    var seq = 0
    /// Unordered IP pairs that cannot reach each other (a firewall dropping UDP between them).
    var blocked: Set<[IPAddress]> = []
    var hostDelay: Duration = .milliseconds(10)
    var events: [[NodeEvent<String>]] = [[], []]
    /// Data each node received from the other: (when, payload).
    var received: [[(Timestamp, [UInt8])]] = [[], []]
    let names = ["client", "gateway"]

    init(relayDelays: [Duration] = [.milliseconds(10)], tweak: (inout NodeConfig) -> Void = { _ in }) {
        addresses = [SocketAddress("203.0.113.10:51820")!, SocketAddress("203.0.113.20:51820")!]
        nodes = []
        for (i, a) in addresses.enumerated() {
            var c = NodeConfig(role: i == 0 ? .controlling : .controlled, sockets: [a], hostAddresses: [a.ip])
            tweak(&c)
            nodes.append(ConnectivityNode(config: c))
        }
        for (i, d) in relayDelays.enumerated() {
            let address = SocketAddress("198.51.100.\(i + 1):3478")!
            var cfg = ServerConfig(realm: "fz.test", relayAddresses: [RelayAddress(bind: address.ip)])
            cfg.portRange = 50_000...50_100
            var server = TURNServer(config: cfg, credentials: CredentialStore(realm: "fz.test", users: ["u": "p"], secrets: []),
                                    sockets: NoSockets())
            server.updatePeerPolicy(PeerPolicy(defaultDeny: []))
            relays.append(Relay(address: address, server: server, delay: d))
        }
        let list = relays.enumerated().map { i, r in
            NodeRelay(id: "r\(i)", name: "relay-\(i)", address: r.address, credentials: TURNCredentials(username: "u", password: "p"))
        }
        for i in nodes.indices { nodes[i].setRelays(list, now: clock.now) }
        pumpOutputs()
    }

    var now: Timestamp { clock.now }

    func delay(to address: SocketAddress) -> Duration {
        if let r = relays.first(where: { $0.address.ip == address.ip }) { return r.delay }
        return hostDelay
    }

    mutating func send(from: SocketAddress, to: SocketAddress, _ bytes: [UInt8]) {
        if blocked.contains([from.ip, to.ip].sorted { "\($0)" < "\($1)" }) { return }
        // One way: the sender's access delay plus the receiver's.
        let d = delay(to: from) + delay(to: to)
        seq += 1
        queue.append(InFlight(at: clock.now + d, seq: seq, from: from, to: to, bytes: bytes))
    }

    func block(_ a: IPAddress, _ b: IPAddress) -> [IPAddress] { [a, b].sorted { "\($0)" < "\($1)" } }

    /// Starts the connection both ways and exchanges candidates through a signalling channel with `signalDelay`.
    mutating func connect() {
        let c = IceCredentials(ufrag: "cccc", password: "cccccccccccccccccccccccc")
        let g = IceCredentials(ufrag: "gggg", password: "gggggggggggggggggggggggg")
        nodes[0].connect("gateway", local: c, remote: g, now: now)
        nodes[1].connect("client", local: g, remote: c, now: now)
        // Candidates gathered before the connection existed are announced by the agents at once.
        pumpOutputs()
    }

    mutating func pumpOutputs() {
        for i in nodes.indices {
            while let t = nodes[i].pollTransmit() { send(from: t.socket, to: t.destination, t.bytes) }
            while let e = nodes[i].pollEvent() {
                events[i].append(e)
                if case .localCandidate(_, let c) = e {
                    // Signalling: immediate (the portal's delay is not what these tests measure).
                    let other = 1 - i
                    nodes[other].addRemoteCandidate(c, for: names[i], now: now)
                }
            }
        }
        for r in relays.indices {
            for e in relays[r].server.drainEvents() { _ = e }
        }
    }

    mutating func deliver(_ p: InFlight) {
        if let r = relays.firstIndex(where: { $0.address.ip == p.to.ip }) {
            guard relays[r].up else { return }
            if p.to == relays[r].address {
                let action = p.bytes.withUnsafeBytes { relays[r].server.handleClient($0, from: p.from, listener: p.to, now: now) }
                switch action {
                case .none: break
                case .reply(let bytes): send(from: p.to, to: p.from, bytes)
                case .forward(let from, let to, let offset, let length, _):
                    send(from: from, to: to, Array(p.bytes[offset..<offset + length]))
                }
            } else {
                let action = p.bytes.withUnsafeBytes { relays[r].server.handlePeer($0, from: p.from, relayed: p.to, now: now) }
                switch action {
                case .none: break
                case .channelData(let client, let listener, let channel):
                    var frame = [UInt8](repeating: 0, count: 4 + p.bytes.count)
                    frame.withUnsafeMutableBytes { ChannelData.writeHeader(channel: channel, length: p.bytes.count, to: $0.baseAddress!) }
                    frame.replaceSubrange(4..., with: p.bytes)
                    send(from: listener, to: client, frame)
                case .dataIndication(let client, let listener, let from):
                    var buffer = [UInt8](repeating: 0, count: DataIndication.size(peer: from, payloadLength: p.bytes.count)!)
                    let n = p.bytes.withUnsafeBytes { payload in
                        buffer.withUnsafeMutableBytes { DataIndication.write(peer: from, transactionID: .random(), payload: payload, into: $0) }
                    }
                    send(from: listener, to: client, Array(buffer[0..<n!]))
                case .streamChannelData, .streamDataIndication:
                    Issue.record("UDP only")
                }
            }
            return
        }
        guard let i = addresses.firstIndex(of: p.to) else { return }
        switch nodes[i].handleInbound(p.bytes, from: p.from, socket: addresses[i], now: now) {
        case .handled: break
        case .notMine: received[i].append((now, p.bytes))
        case .relayedData(let range, _, _, _): received[i].append((now, Array(p.bytes[range])))
        }
    }

    /// Runs to `seconds` from now; while `traffic`, each side sends a datagram to the other every 10 ms
    /// on its current path and notes traffic.
    mutating func run(seconds: Double, traffic: Bool = false) {
        let end = clock.now + .nanoseconds(Int64(seconds * 1e9))
        var nextData = clock.now
        while true {
            var next = min(nodes[0].nextDeadline, nodes[1].nextDeadline)
            for r in relays.indices where relays[r].up { next = min(next, relays[r].server.nextDeadline) }
            if let q = queue.min(by: { ($0.at, $0.seq) < ($1.at, $1.seq) }) { next = min(next, q.at) }
            if traffic { next = min(next, nextData) }
            guard next <= end else { break }
            if next > clock.now { clock.advance(by: next - clock.now) }
            for r in relays.indices where relays[r].up && relays[r].server.nextDeadline <= now { relays[r].server.handleTimeout(now: now) }
            for i in nodes.indices where nodes[i].nextDeadline <= now { nodes[i].handleTimeout(now: now) }
            let t = now
            let due = queue.filter { $0.at <= t }.sorted { ($0.at, $0.seq) < ($1.at, $1.seq) }
            queue.removeAll { $0.at <= t }
            for p in due {
                deliver(p)
                pumpOutputs()
            }
            if traffic, nextData <= now {
                for i in nodes.indices {
                    if let t = nodes[i].sendData(to: names[1 - i], [0x04, 0, 0, 0] + Array("data".utf8), now: now) {
                        send(from: t.socket, to: t.destination, t.bytes)
                    }
                    nodes[i].noteTraffic(names[1 - i], now: now)
                }
                nextData = now + .milliseconds(10)
            }
            pumpOutputs()
        }
        if end > clock.now { clock.advance(by: end - clock.now) }
    }

    func paths(_ i: Int) -> [NodePath] {
        events[i].compactMap { if case .path(_, let p, _) = $0 { p } else { nil } }
    }

    func pairs(_ i: Int) -> [IcePair] {
        events[i].compactMap { if case .path(_, _, let p) = $0 { p } else { nil } }
    }

    /// The relay (index) a path goes through: ours (ChannelData to its server) or the peer's
    /// (straight to its relayed address).
    func relayIndex(of path: NodePath) -> Int? {
        let ip: IPAddress
        switch path {
        case .relayed(let server, _): ip = server.ip
        case .direct(let a): ip = a.ip
        }
        return relays.firstIndex { $0.address.ip == ip }
    }

    /// The longest gap between data arrivals at node `i` after `from`.
    func longestGap(_ i: Int, after from: Timestamp) -> Duration {
        let times = received[i].map(\.0).filter { $0 >= from }
        guard var last = times.first else { return .seconds(1_000) }
        var gap = Duration.zero
        for t in times.dropFirst() {
            gap = max(gap, t - last)
            last = t
        }
        return max(gap, now - last)
    }
}

@Suite("ConnectivityNode")
struct ConnectivityNodeTests {
    @Test("two public hosts connect directly, the relay allocated as a standby")
    func direct() throws {
        var net = NodeNet()
        net.run(seconds: 0.2)
        net.connect()
        let start = net.now
        net.run(seconds: 2, traffic: true)
        let path = try #require(net.paths(0).first)
        #expect(path == .direct(net.addresses[1]))
        #expect(net.paths(1).first == .direct(net.addresses[0]))
        #expect(net.nodes[0].relayStatus.first?.relayed != nil, "the relay holds an allocation")
        #expect(net.nodes[0].relayStatus.first?.rtt == .milliseconds(40))
        #expect(!net.received[1].isEmpty && !net.received[0].isEmpty)
        // Both sides had candidates at `start`: data flows within 4 RTTs (RTT 40 ms) plus a send interval.
        let firstData = try #require(net.received[1].first?.0)
        #expect(firstData - start <= .milliseconds(200))
    }

    @Test("with UDP between the hosts blocked, data goes through a relay")
    func relayedWhenBlocked() throws {
        var net = NodeNet()
        net.blocked.insert(net.block(net.addresses[0].ip, net.addresses[1].ip))
        net.run(seconds: 0.2)
        net.connect()
        let start = net.now
        net.run(seconds: 2, traffic: true)
        let path = try #require(net.paths(0).first)
        #expect(net.relayIndex(of: path) == 0, "\(path)")
        #expect(try #require(net.pairs(0).first).isRelayed)
        if case .relayed(_, let channel) = path { #expect((0x4000...0x4FFF).contains(channel)) }
        let firstData = try #require(net.received[1].first?.0)
        #expect(firstData - start <= .milliseconds(300))
        #expect(net.longestGap(1, after: firstData) < .milliseconds(100))
    }

    @Test("the relay with the lower RTT is allocated first, and both relays hold allocations")
    func relayChoice() throws {
        var net = NodeNet(relayDelays: [.milliseconds(40), .milliseconds(5)])
        net.run(seconds: 0.5)
        let status = net.nodes[0].relayStatus
        #expect(status.allSatisfy { $0.relayed != nil })
        let allocated = net.events[0].compactMap { if case .relayAllocated(let id, _) = $0 { id } else { nil } }
        #expect(allocated == ["r1", "r0"])
        #expect(status[1].rtt! < status[0].rtt!)
    }

    @Test("a relayed connection moves to the other relay within 2 s when its relay dies")
    func relayFailover() throws {
        var net = NodeNet(relayDelays: [.milliseconds(5), .milliseconds(20)])
        net.blocked.insert(net.block(net.addresses[0].ip, net.addresses[1].ip))
        net.run(seconds: 0.5)
        net.connect()
        net.run(seconds: 3, traffic: true)
        let before = try #require(net.paths(0).last)
        let dead = try #require(net.relayIndex(of: before))
        #expect(dead == 0, "the faster relay carries the path")
        net.relays[dead].up = false
        let cut = net.now
        net.run(seconds: 4, traffic: true)
        let after = try #require(net.paths(0).last)
        #expect(net.relayIndex(of: after) == 1 - dead, "\(after)")
        #expect(net.longestGap(1, after: cut) <= .seconds(2))
        #expect(net.longestGap(0, after: cut) <= .seconds(2))
    }

    @Test("a relayed path moves to the other relay once that one is clearly faster, without a gap, and stays")
    func relaySwitchByRTT() throws {
        var net = NodeNet(relayDelays: [.milliseconds(5), .milliseconds(20)])
        net.blocked.insert(net.block(net.addresses[0].ip, net.addresses[1].ip))
        net.run(seconds: 0.5)
        net.connect()
        net.run(seconds: 3, traffic: true)
        let slow = net.relays[0].address.ip
        func uses(_ pair: IcePair, _ ip: IPAddress) -> Bool { pair.local.address.ip == ip || pair.remote.address.ip == ip }
        #expect(uses(try #require(net.pairs(0).last), slow), "the faster relay carries the path first")
        // Relay 0 gets slow (a congested region): 2 × 100 ms more per round trip through it.
        net.relays[0].delay = .milliseconds(100)
        let change = net.now
        net.run(seconds: 6, traffic: true)
        let moved = try #require(net.pairs(0).last)
        #expect(!uses(moved, slow), "\(moved)")
        #expect(net.longestGap(1, after: change) < .milliseconds(400))
        // Settled: no move back and forth.
        let count = net.pairs(0).count
        net.run(seconds: 10, traffic: true)
        #expect(net.pairs(0).count == count)
    }

    @Test("a peer's data in a Data indication gets a channel at once, its ChannelBind sent before any reply")
    func dataIndicationBindsAChannel() throws {
        var net = NodeNet()
        net.blocked.insert(net.block(net.addresses[0].ip, net.addresses[1].ip))
        net.run(seconds: 0.5)
        net.connect()
        net.run(seconds: 1)
        while net.nodes[0].pollTransmit() != nil {}
        // The peer's address behind a NAT that picked another port for this destination: the
        // relay has a permission for its IP but no channel for this address.
        let peer = SocketAddress("203.0.113.20:60000")!
        let relay = net.relays[0].address
        let payload: [UInt8] = [0x01, 0, 0, 0] + Array(repeating: 7, count: 144)  // a WireGuard initiation's size
        var buffer = [UInt8](repeating: 0, count: DataIndication.size(peer: peer, payloadLength: payload.count)!)
        let written = payload.withUnsafeBytes { p in
            buffer.withUnsafeMutableBytes { DataIndication.write(peer: peer, transactionID: .random(), payload: p, into: $0) }
        }
        let n = try #require(written)
        let input = net.nodes[0].handleInbound(Array(buffer[0..<n]), from: relay, socket: net.addresses[0], now: net.now)
        guard case .relayedData(let range, let from, let via, let channel) = input else {
            Issue.record("not relayed data: \(input)")
            return
        }
        #expect(Array(buffer[range]) == payload)
        #expect(from == peer && via == relay)
        let number = try #require(channel)
        #expect((0x4000...0x4FFF).contains(number))
        let transmit = net.nodes[0].pollTransmit()
        let bind = try #require(transmit)
        #expect(bind.destination == relay)
        let message = try Message.decode(bind.bytes)
        #expect(message.type.method == .channelBind)
        #expect(message.attributes.contains(.xorPeerAddress(peer)))
        #expect(message.attributes.contains(.channelNumber(number)))
    }

    @Test("a relay that lost our allocation (437: it restarted, or our address changed) gets a new one at once, no cooldown")
    func allocationMismatchReallocates() throws {
        var net = NodeNet(relayDelays: [.milliseconds(5)])
        net.blocked.insert(net.block(net.addresses[0].ip, net.addresses[1].ip))
        net.run(seconds: 0.5)
        net.connect()
        net.run(seconds: 2, traffic: true)
        let first = try #require(net.nodes[0].relayStatus.first?.relayed)
        // The relay restarts: same address, no state. The next request on the old allocation
        // (a permission or channel refresh, a Refresh) is answered 437.
        var cfg = ServerConfig(realm: "fz.test", relayAddresses: [RelayAddress(bind: net.relays[0].address.ip)])
        cfg.portRange = 50_200...50_300
        net.relays[0].server = TURNServer(config: cfg, credentials: CredentialStore(realm: "fz.test", users: ["u": "p"], secrets: []),
                                          sockets: NoSockets())
        net.relays[0].server.updatePeerPolicy(PeerPolicy(defaultDeny: []))
        let restart = net.now
        net.run(seconds: 10, traffic: true)
        let lost = try #require(net.events[0].firstIndex { if case .relayLost(_, let reason) = $0 { reason.contains("437") } else { false } })
        let again = net.events[0][lost...].contains { if case .relayAllocated("r0", _) = $0 { true } else { false } }
        #expect(again, "re-allocated on the same relay")
        let now = try #require(net.nodes[0].relayStatus.first?.relayed)
        #expect(now != first)
        #expect(net.nodes[0].stats.addressChanges >= 1)
        // The dead pair is noticed (1.5 s under traffic), the allocation checked (437), a new
        // one made and signalled: data flows again within seconds, not at the next refresh.
        let back = try #require(net.received[1].first { $0.0 > restart + .milliseconds(100) }?.0)
        #expect(back - restart < .seconds(4), "\(back - restart)")
        #expect(net.longestGap(1, after: back) < .milliseconds(200))
    }

    @Test("a blocked direct path fails over to the warm relayed pair within 2 s while traffic flows")
    func directToRelayedFailover() throws {
        var net = NodeNet()
        net.run(seconds: 0.2)
        net.connect()
        net.run(seconds: 3, traffic: true)
        #expect(net.paths(0).last == .direct(net.addresses[1]))
        net.blocked.insert(net.block(net.addresses[0].ip, net.addresses[1].ip))
        let cut = net.now
        net.run(seconds: 4, traffic: true)
        let after = try #require(net.pairs(0).last)
        #expect(after.isRelayed, "\(after)")
        #expect(net.longestGap(1, after: cut) <= .seconds(2))
    }

    @Test("unauthenticated and malformed STUN is dropped and counted, never crashes")
    func junk() {
        var net = NodeNet()
        net.run(seconds: 0.2)
        net.connect()
        var rng = SplitMix64(seed: 7)
        for n in 0..<2_000 {
            var bytes = (0..<(20 + Int(rng.next() % 80))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            bytes[0] = UInt8(rng.next() & 0x01)  // STUN or ChannelData-ish first byte
            if n % 2 == 0 {
                bytes[4] = 0x21; bytes[5] = 0x12; bytes[6] = 0xA4; bytes[7] = 0x42
            }
            let from = n % 3 == 0 ? net.relays[0].address : SocketAddress("192.0.2.9:999")!
            _ = net.nodes[1].handleInbound(bytes, from: from, socket: net.addresses[1], now: net.now)
        }
        #expect(net.nodes[1].stats.malformed + net.nodes[1].stats.unclaimedSTUN > 0)
        net.run(seconds: 2, traffic: true)
        #expect(net.paths(0).first == .direct(net.addresses[1]))
    }
}

