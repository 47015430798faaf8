import FZCore
import FZTestSupport
import Testing

@testable import WireGuard

/// A device (the responder side of many peers) and standalone client peers talking to it.
struct DeviceHarness {
    var clock = ManualClock()
    let serverKey = PrivateKey.generate()
    let serverAddress = SocketAddress("203.0.113.1:51820")!
    var device: Device
    var clientKeys: [PrivateKey] = []
    var clients: [Peer] = []
    var ids: [PeerID] = []

    init(clients count: Int) {
        device = Device(privateKey: serverKey, wallClock: WallClock(anchor: wallClockStart, at: clock.now))
        for _ in 0..<count { addClient() }
    }

    mutating func addClient() {
        let key = PrivateKey.generate()
        clientKeys.append(key)
        ids.append(device.addPeer(PeerConfiguration(publicKey: key.publicKey))!)
        clients.append(Peer(localKey: key, configuration: PeerConfiguration(publicKey: serverKey.publicKey),
                            wallClock: WallClock(anchor: wallClockStart, at: clock.now)))
    }

    func address(_ i: Int) -> SocketAddress { SocketAddress(ip: .v4(IPv4Address(10, 1, 0, UInt8(i + 1))), port: 40_000) }

    /// Client `i` sends `packet`; the result of the device handling each datagram that follows.
    mutating func clientSends(_ i: Int, _ packet: [UInt8]) -> [(PeerID?, DecapsulateResult, [UInt8])] {
        var buffer = [UInt8](repeating: 0, count: 2048)
        var outcomes: [(PeerID?, DecapsulateResult, [UInt8])] = []
        var toDevice: [[UInt8]] = []
        switch clients[i].encapsulate(packet, into: &buffer, now: clock.now) {
        case .datagram(let n), .handshakeInitiation(let n): toDevice.append(Array(buffer[0..<n]))
        default: break
        }
        while !toDevice.isEmpty {
            let datagram = toDevice.removeFirst()
            var out = [UInt8](repeating: 0, count: 2048)
            let (peer, result) = device.decapsulate(datagram, from: address(i), into: &out, now: clock.now)
            outcomes.append((peer, result, out))
            if case .handshakeResponse(let n) = result {
                var back = [UInt8](repeating: 0, count: 2048)
                if case .handshakeCompleted(let m) = clients[i].decapsulate(Array(out[0..<n]), from: serverAddress,
                                                                             into: &back, now: clock.now) {
                    toDevice.append(Array(back[0..<m]))
                }
            }
        }
        return outcomes
    }
}

@Suite("Device: finding the peer of a datagram (whitepaper §5.4.2, §5.4.6)")
struct DeviceTests {
    @Test("an initiation finds its peer by the decrypted static key, the data after it by receiver index")
    func routing() throws {
        var h = DeviceHarness(clients: 3)
        #expect(h.ids.allSatisfy { h.device.endpoint(of: $0) == nil })
        for i in [2, 0, 1] {
            let packet = ipv4Packet(size: 40, fill: UInt8(i))
            let outcomes = h.clientSends(i, packet)
            #expect(outcomes.map(\.0) == [h.ids[i], h.ids[i]])
            #expect(outcomes.first?.1 == .handshakeResponse(92))
            #expect(outcomes.last?.1 == .packet(16..<56))
            #expect(outcomes.last.map { Array($0.2[16..<56]) } == packet)
            #expect(h.device[h.ids[i]].endpoint == h.address(i))
            #expect(h.device.endpoint(of: h.ids[i]) == h.address(i))
        }
        // And back: the device's peer encrypts, the right client decrypts.
        var buffer = [UInt8](repeating: 0, count: 2048)
        let reply = ipv4Packet(size: 33)
        let sent = h.device[h.ids[1]].encapsulate(reply, into: &buffer, now: h.clock.now)
        #expect(sent == .datagram(80))
        var out = [UInt8](repeating: 0, count: 2048)
        #expect(h.clients[1].decapsulate(Array(buffer[0..<80]), from: h.serverAddress, into: &out, now: h.clock.now)
                == .packet(16..<49))
        #expect(h.clients[0].decapsulate(Array(buffer[0..<80]), from: h.serverAddress, into: &out, now: h.clock.now)
                == .drop(.unknownReceiver))
    }

    @Test("an initiation from a static key the device does not know is dropped and counted")
    func unknownPeer() {
        var h = DeviceHarness(clients: 1)
        var stranger = Peer(localKey: .generate(), configuration: PeerConfiguration(publicKey: h.serverKey.publicKey),
                            wallClock: WallClock(anchor: wallClockStart, at: h.clock.now))
        var buffer = [UInt8](repeating: 0, count: 2048)
        _ = stranger.encapsulate(ipv4Packet(size: 20), into: &buffer, now: h.clock.now)
        var out = [UInt8](repeating: 0, count: 2048)
        let (peer, result) = h.device.decapsulate(Array(buffer[0..<148]), from: h.address(9), into: &out, now: h.clock.now)
        #expect(peer == nil)
        #expect(result == .drop(.unknownPeer))
        #expect(h.device.dropped[.unknownPeer] == 1)
    }

    @Test("datagrams whose receiver index no peer owns are dropped as unknown receivers")
    func unknownReceiver() {
        var h = DeviceHarness(clients: 1)
        var out = [UInt8](repeating: 0, count: 2048)
        var transport = [UInt8](repeating: 0, count: 64)
        transport[0] = 4
        transport.withUnsafeMutableBytes { $0.storeU32(77 << 8 | 3, at: 4) }
        #expect(h.device.decapsulate(transport, from: h.address(0), into: &out, now: h.clock.now).result
                == .drop(.unknownReceiver))
        transport.withUnsafeMutableBytes { $0.storeU32(h.ids[0].slot << 8 | 3, at: 4) }
        #expect(h.device.decapsulate(transport, from: h.address(0), into: &out, now: h.clock.now).result
                == .drop(.unknownReceiver), "the slot exists but the session does not")
        #expect(h.device.dropped[.unknownReceiver] == 1)
        #expect(h.device[h.ids[0]].stats.dropped[.unknownReceiver] == 1)
    }

    @Test("under load the device answers an initiation without MAC2 with a cookie reply before any peer work")
    func cookieUnderLoad() throws {
        var h = DeviceHarness(clients: 1)
        h.device.underLoad = true
        let first = h.clientSends(0, ipv4Packet(size: 20))
        #expect(first.map(\.0) == [nil])
        #expect(first.map(\.1) == [.cookieReply(64)])
        #expect(h.device.cookieRepliesSent == 1)
        var out = [UInt8](repeating: 0, count: 2048)
        let reply = Array(first[0].2[0..<64])
        #expect(h.clients[0].decapsulate(reply, from: h.serverAddress, into: &out, now: h.clock.now) == .cookieAccepted)
        h.clock.advance(seconds: 6)
        let actions = h.clients[0].handleTimeout(now: h.clock.now)
        guard case .sendHandshakeInitiation(let retry) = try #require(actions.first) else {
            Issue.record("expected a retry, got \(actions)")
            return
        }
        let (peer, result) = h.device.decapsulate(retry, from: h.address(0), into: &out, now: h.clock.now)
        #expect(peer == h.ids[0])
        #expect(result == .handshakeResponse(92))
    }

    @Test("a removed peer is gone: its data and its initiations no longer reach anything")
    func removePeer() {
        var h = DeviceHarness(clients: 2)
        _ = h.clientSends(0, ipv4Packet(size: 20))
        h.device.removePeer(h.ids[0])
        #expect(h.device.peerIDs == [h.ids[1]])
        #expect(h.clientSends(0, ipv4Packet(size: 20)).map(\.1) == [.drop(.unknownReceiver)])
        h.clock.advance(seconds: 200)
        #expect(h.clientSends(0, ipv4Packet(size: 20)).map(\.1) == [.drop(.unknownPeer)])
        #expect(h.device.peerID(for: h.clientKeys[0].publicKey) == nil)
    }

    @Test("the same key twice, or the device's own key, cannot be added")
    func duplicateKeys() {
        var h = DeviceHarness(clients: 1)
        #expect(h.device.addPeer(PeerConfiguration(publicKey: h.clientKeys[0].publicKey)) == nil)
        #expect(h.device.addPeer(PeerConfiguration(publicKey: h.serverKey.publicKey)) == nil)
        #expect(h.device.peerID(for: h.clientKeys[0].publicKey) == h.ids[0])
    }

    @Test("the device's deadline is its peers' earliest, and handleTimeout runs the peers that are due")
    func deviceTimers() {
        var h = DeviceHarness(clients: 2)
        #expect(h.device.nextDeadline == .distantFuture)
        _ = h.clientSends(1, ipv4Packet(size: 20))
        // The device's peer received data: it owes a keepalive in 10 s.
        #expect(h.device.nextDeadline == h.clock.now + .seconds(10))
        h.clock.advance(seconds: 10)
        let actions = h.device.handleTimeout(now: h.clock.now)
        #expect(actions.count == 1)
        #expect(actions.first?.0 == h.ids[1])
        if case .sendKeepalive(let bytes) = actions.first?.1 { #expect(bytes.count == 32) } else { Issue.record("no keepalive") }
    }
}

@Suite("Device under load: MAC2, then the per-source rate limit (whitepaper §5.3)")
struct DeviceRateLimitTests {
    @Test("under load, valid-MAC2 initiations beyond a source's burst are dropped before any DH; not when not under load")
    func rateLimitedUnderLoad() throws {
        var h = DeviceHarness(clients: 1)
        h.device.underLoad = true
        let first = h.clientSends(0, ipv4Packet(size: 20))
        #expect(first.map(\.1) == [.cookieReply(64)])
        var out = [UInt8](repeating: 0, count: 2048)
        let reply = Array(first[0].2[0..<64])
        #expect(h.clients[0].decapsulate(reply, from: h.serverAddress, into: &out, now: h.clock.now) == .cookieAccepted)
        h.clock.advance(seconds: 6)
        guard case .sendHandshakeInitiation(let retry) = try #require(h.clients[0].handleTimeout(now: h.clock.now).first)
        else {
            Issue.record("expected a retry")
            return
        }
        // The same valid-MAC2 initiation ten times at once: the burst (5) passes the limiter
        // (the first is answered, the replays are caught by the timestamp check), the rest not.
        var results: [DecapsulateResult] = []
        for _ in 0..<10 {
            results.append(h.device.decapsulate(retry, from: h.address(0), into: &out, now: h.clock.now).result)
        }
        #expect(results.first == .handshakeResponse(92))
        #expect(results[1..<5].allSatisfy { $0 != .drop(.rateLimited) })
        #expect(Array(results[5...]) == Array(repeating: .drop(.rateLimited), count: 5))
        #expect(h.device.dropped[.rateLimited] == 5)
        #expect(h.device.rateLimiter.limited == 5)

        // Another source is not limited (its MAC2 is wrong for it, so it gets a cookie reply).
        #expect(h.device.decapsulate(retry, from: h.address(1), into: &out, now: h.clock.now).result == .cookieReply(64))

        // Not under load: no limit at all.
        h.device.underLoad = false
        let before = h.device.dropped[.rateLimited]
        for _ in 0..<10 { _ = h.device.decapsulate(retry, from: h.address(0), into: &out, now: h.clock.now) }
        #expect(h.device.dropped[.rateLimited] == before)
    }
}
