import FZCore
import FZTestSupport
import Testing

@testable import WireGuard

@Suite("Handshake (whitepaper §5.4.2-§5.4.3, §5.1 replay)")
struct HandshakeTests {
    @Test("Alice's first packet starts a handshake, and arrives once Bob's response is in")
    func initiatorFlow() throws {
        var sim = Simulator()
        let packet = ipv4Packet(size: 60, fill: 7)
        let result = sim.send(from: .alice, packet)
        #expect(result == .handshakeInitiation(148))
        #expect(sim.alice.queuedPacketCount == 1)
        sim.deliverAll()
        #expect(sim.sent.map(\.type) == [1, 2, 4])
        #expect(sim.sent.map(\.bytes.count) == [148, 92, 16 + 64 + 16])
        #expect(sim.results[.alice] == [.handshakeCompleted(96)])
        #expect(sim.received[.bob] == [packet])
        #expect(sim.alice.hasSession(at: sim.now) && sim.bob.hasSession(at: sim.now))
        #expect(sim.alice.queuedPacketCount == 0)
        #expect(sim.alice.stats.handshakesCompleted == 1 && sim.bob.stats.handshakesCompleted == 1)
    }

    @Test("Bob can initiate as well: both roles work in one pair")
    func responderInitiates() {
        var sim = Simulator()
        let packet = ipv4Packet(size: 100, fill: 9)
        #expect(sim.send(from: .bob, packet) == .handshakeInitiation(148))
        sim.deliverAll()
        #expect(sim.received[.alice] == [packet])
        let back = ipv4Packet(size: 40, fill: 3)
        #expect(sim.send(from: .alice, back) == .datagram(16 + 48 + 16))
        sim.deliverAll()
        #expect(sim.received[.bob] == [back])
    }

    @Test("with a pre-shared key both roles complete and data flows", arguments: [Side.alice, .bob])
    func presharedKey(initiator: Side) {
        var sim = Simulator(psk: .generate())
        sim.send(from: initiator, ipv4Packet(size: 30))
        sim.deliverAll()
        #expect(sim.received[initiator.other]?.count == 1)
        sim.send(from: initiator.other, ipv4Packet(size: 31))
        sim.deliverAll()
        #expect(sim.received[initiator]?.count == 1)
    }

    @Test("pre-shared keys that differ fail the response's authentication: no session, nothing delivered")
    func mismatchedPresharedKeys() {
        var sim = Simulator(psk: .generate(), bobPSK: .some(.generate()))
        sim.send(from: .alice, ipv4Packet(size: 30))
        sim.deliverAll()
        #expect(sim.results[.alice] == [.drop(.authenticationFailed)])
        #expect(sim.received[.bob] == [])
        #expect(!sim.alice.hasSession(at: sim.now))
        #expect(sim.alice.stats.dropped[.authenticationFailed] == 1)
    }

    @Test("a pre-shared key on one side only also fails the handshake")
    func presharedKeyOnOneSide() {
        var sim = Simulator(psk: nil, bobPSK: .some(.generate()))
        sim.send(from: .alice, ipv4Packet(size: 30))
        sim.deliverAll()
        #expect(sim.results[.alice] == [.drop(.authenticationFailed)])
        #expect(!sim.alice.hasSession(at: sim.now))
    }

    @Test("an initiation built for another responder key fails MAC1 and costs no Curve25519 work")
    func wrongResponderKey() {
        var sim = Simulator()
        var mallory = Peer(localKey: sim.aliceKey, configuration: PeerConfiguration(publicKey: PrivateKey.generate().publicKey),
                           wallClock: WallClock(anchor: wallClockStart, at: sim.now))
        var buffer = [UInt8](repeating: 0, count: 256)
        guard case .handshakeInitiation(let n) = mallory.encapsulate(ipv4Packet(size: 20), into: &buffer, now: sim.now) else {
            Issue.record("no initiation")
            return
        }
        #expect(sim.deliver(Array(buffer[0..<n]), to: .bob) == .drop(.invalidMAC1))
        #expect(sim.bob.stats.dropped[.invalidMAC1] == 1)
    }

    @Test("an initiation from a static key the responder does not know is dropped as an unknown peer")
    func unknownInitiator() {
        var sim = Simulator()
        var carol = Peer(localKey: .generate(), configuration: PeerConfiguration(publicKey: sim.bobKey.publicKey),
                         wallClock: WallClock(anchor: wallClockStart, at: sim.now))
        var buffer = [UInt8](repeating: 0, count: 256)
        guard case .handshakeInitiation(let n) = carol.encapsulate(ipv4Packet(size: 20), into: &buffer, now: sim.now) else {
            Issue.record("no initiation")
            return
        }
        #expect(sim.deliver(Array(buffer[0..<n]), to: .bob) == .drop(.unknownPeer))
        #expect(!sim.bob.hasSession(at: sim.now))
    }

    @Test("a captured initiation replayed later is rejected by its TAI64N timestamp")
    func replayedInitiation() {
        var sim = Simulator()
        sim.establish()
        let initiation = sim.sent[0].bytes
        sim.advance(seconds: 1)
        #expect(sim.deliver(initiation, to: .bob) == .drop(.replayedInitiation))
        #expect(sim.bob.stats.dropped[.replayedInitiation] == 1)
        // The established session is untouched.
        sim.send(from: .alice, ipv4Packet(size: 20))
        sim.deliverAll()
        #expect(sim.received[.bob]?.count == 2)
    }

    @Test("a restarted initiator whose clock reads earlier is rejected, one whose clock reads later is accepted")
    func restartedInitiatorClock() {
        var sim = Simulator()
        sim.establish()
        sim.advance(seconds: 30)
        func initiation(anchor: TAI64N) -> [UInt8] {
            var restarted = Peer(localKey: sim.aliceKey, configuration: PeerConfiguration(publicKey: sim.bobKey.publicKey),
                                 wallClock: WallClock(anchor: anchor, at: sim.now))
            var buffer = [UInt8](repeating: 0, count: 256)
            _ = restarted.encapsulate(ipv4Packet(size: 20), into: &buffer, now: sim.now)
            return Array(buffer[0..<148])
        }
        #expect(sim.deliver(initiation(anchor: wallClockStart), to: .bob) == .drop(.replayedInitiation))
        let later = TAI64N(seconds: wallClockStart.seconds + 3600, nanoseconds: 0)
        #expect(sim.deliver(initiation(anchor: later), to: .bob) == .handshakeResponse(92))
    }

    @Test("two fresh initiations from one peer within 20 ms: the second is dropped as a flood")
    func initiationFlood() {
        var sim = Simulator()
        func initiation(anchorOffset: UInt64) -> [UInt8] {
            var a = Peer(localKey: sim.aliceKey, configuration: PeerConfiguration(publicKey: sim.bobKey.publicKey),
                         wallClock: WallClock(anchor: TAI64N(seconds: wallClockStart.seconds + anchorOffset, nanoseconds: 0),
                                              at: sim.now))
            var buffer = [UInt8](repeating: 0, count: 256)
            _ = a.encapsulate(ipv4Packet(size: 20), into: &buffer, now: sim.now)
            return Array(buffer[0..<148])
        }
        #expect(sim.deliver(initiation(anchorOffset: 1), to: .bob) == .handshakeResponse(92))
        sim.clock.advance(by: .milliseconds(10))
        #expect(sim.deliver(initiation(anchorOffset: 2), to: .bob) == .drop(.initiationFlood))
        sim.clock.advance(by: .milliseconds(15))
        #expect(sim.deliver(initiation(anchorOffset: 3), to: .bob) == .handshakeResponse(92))
    }

    @Test("the wire format: type bytes with zero reserved bytes, little-endian indices, response addressed to the initiation's sender")
    func wireFormat() {
        var sim = Simulator()
        sim.establish()
        let (initiation, response, data) = (sim.sent[0].bytes, sim.sent[1].bytes, sim.sent[2].bytes)
        #expect(Array(initiation[0..<4]) == [1, 0, 0, 0])
        #expect(Array(response[0..<4]) == [2, 0, 0, 0])
        #expect(Array(data[0..<4]) == [4, 0, 0, 0])
        let sender = initiation.withUnsafeBytes { $0.u32(at: 4) }
        #expect(response.withUnsafeBytes { $0.u32(at: 8) } == sender)
        #expect(sender >> 8 == 1, "alice's index slot")
        let responder = response.withUnsafeBytes { $0.u32(at: 4) }
        #expect(responder >> 8 == 2, "bob's index slot")
        #expect(data.withUnsafeBytes { $0.u32(at: 4) } == responder)
        #expect(data.withUnsafeBytes { $0.u64(at: 8) } == 0)
        // No cookie yet: MAC2 is all zeros.
        #expect(initiation[132..<148].allSatisfy { $0 == 0 })
    }

    @Test("both peers initiating at once still end with working sessions both ways")
    func simultaneousInitiation() {
        var sim = Simulator()
        #expect(sim.send(from: .alice, ipv4Packet(size: 20, fill: 1)) == .handshakeInitiation(148))
        #expect(sim.send(from: .bob, ipv4Packet(size: 20, fill: 2)) == .handshakeInitiation(148))
        sim.deliverAll()
        #expect(sim.received[.alice] == [ipv4Packet(size: 20, fill: 2)])
        #expect(sim.received[.bob] == [ipv4Packet(size: 20, fill: 1)])
        sim.send(from: .alice, ipv4Packet(size: 21))
        sim.send(from: .bob, ipv4Packet(size: 22))
        sim.deliverAll()
        #expect(sim.received[.alice]?.count == 2 && sim.received[.bob]?.count == 2)
    }

    @Test("a tampered response is dropped and the initiator's retry completes the handshake")
    func tamperedResponse() {
        var sim = Simulator()
        sim.send(from: .alice, ipv4Packet(size: 20))
        sim.deliver(sim.network.removeFirst().bytes, to: .bob)
        var response = sim.network.removeFirst().bytes
        response[50] ^= 0x01
        // MAC1 covers the byte, so the response fails before any DH.
        #expect(sim.deliver(response, to: .alice) == .drop(.invalidMAC1))
        sim.advance(seconds: 6)
        #expect(sim.received[.bob]?.count == 1)
        #expect(sim.sent(by: .alice).filter(\.isInitiation).count == 2)
    }
}
