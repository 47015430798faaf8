import FZCore
import Testing

@testable import WireGuard

@Suite("Transport data (whitepaper §5.4.6)")
struct TransportTests {
    @Test("packets flow both ways and arrive unpadded, in order")
    func bothWays() {
        var sim = Simulator()
        sim.establish()
        let toBob = (0..<5).map { ipv4Packet(size: 20 + $0 * 17, fill: UInt8($0)) }
        let toAlice = (0..<5).map { ipv4Packet(size: 1280 - $0, fill: UInt8(100 + $0)) }
        for (a, b) in zip(toBob, toAlice) {
            sim.send(from: .alice, a)
            sim.send(from: .bob, b)
        }
        sim.deliverAll()
        #expect(Array(sim.received[.bob]!.dropFirst()) == toBob)
        #expect(sim.received[.alice] == toAlice)
    }

    @Test("plaintext is zero-padded to a multiple of 16 before encryption", arguments: [(20, 64), (33, 80), (48, 80), (1279, 1312)])
    func padding(size: Int, datagram: Int) {
        var sim = Simulator()
        sim.establish()
        #expect(sim.send(from: .alice, ipv4Packet(size: size)) == .datagram(datagram))
        sim.deliverAll()
        #expect(sim.received[.bob]?.last?.count == size)
    }

    @Test("padding stops at the MTU, as wireguard-go's does")
    func paddingCappedAtMTU() {
        let peer = Peer(localKey: .generate(), configuration: PeerConfiguration(publicKey: PrivateKey.generate().publicKey, mtu: 1420),
                        wallClock: WallClock(anchor: wallClockStart, at: .zero))
        #expect(peer.paddedLength(1410) == 1420)
        #expect(peer.paddedLength(1415) == 1420)
        #expect(peer.paddedLength(1420) == 1420)
        #expect(peer.paddedLength(0) == 0)
    }

    @Test("a keepalive is a 32-byte transport message with an empty payload, reported as such")
    func keepalive() {
        var sim = Simulator()
        sim.establish()
        #expect(sim.send(from: .alice, []) == .datagram(32))
        sim.deliverAll()
        #expect(sim.results[.bob]?.last == .keepalive)
        #expect(sim.bob.stats.keepalivesReceived == 1)
    }

    @Test("a datagram encrypted under another session's key is dropped, never returned as a packet")
    func wrongKey() throws {
        var sim = Simulator()
        sim.establish()
        var other = Simulator()
        other.establish()
        other.send(from: .alice, ipv4Packet(size: 60))
        var forged = try #require(other.network.last?.bytes)
        // Address it to Bob's live session so only the key is wrong.
        let bobIndex = sim.sent[2].bytes.withUnsafeBytes { $0.u32(at: 4) }
        forged.withUnsafeMutableBytes { $0.storeU32(bobIndex, at: 4) }
        #expect(sim.deliver(forged, to: .bob) == .drop(.authenticationFailed))
        #expect(sim.bob.stats.dropped[.authenticationFailed] == 1)
        #expect(sim.received[.bob]?.count == 1)
    }

    @Test("a flipped bit anywhere in a transport message makes it drop", arguments: [4, 8, 15, 16, 40, 95])
    func tampered(byte: Int) throws {
        var sim = Simulator()
        sim.establish()
        sim.send(from: .alice, ipv4Packet(size: 60))
        var datagram = try #require(sim.network.popLast()?.bytes)
        datagram[byte] ^= 0x80
        guard case .drop = sim.deliver(datagram, to: .bob) else {
            Issue.record("tampered datagram was accepted")
            return
        }
    }

    @Test("a datagram delivered twice is accepted once")
    func duplicateDatagram() throws {
        var sim = Simulator()
        sim.establish()
        sim.send(from: .alice, ipv4Packet(size: 60))
        let datagram = try #require(sim.network.popLast()?.bytes)
        #expect(sim.deliver(datagram, to: .bob) == .packet(16..<76))
        #expect(sim.deliver(datagram, to: .bob) == .drop(.replayedCounter))
    }

    @Test("decryption can happen in the datagram's own buffer, and encryption in place behind 16 bytes of headroom")
    func inPlace() {
        var sim = Simulator()
        sim.establish()
        let packet = ipv4Packet(size: 100, fill: 0x5A)
        // Encrypt: the plaintext already sits at offset 16 of the send buffer.
        var buffer = [UInt8](repeating: 0, count: 2048)
        buffer.replaceSubrange(16..<116, with: packet)
        let sent = buffer.withUnsafeMutableBytes { b in
            sim.alice.encapsulate(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(b)[16..<116]), into: b, now: sim.now)
        }
        guard case .datagram(let n) = sent else {
            Issue.record("expected a datagram, got \(sent)")
            return
        }
        // Decrypt: output buffer is the datagram buffer itself.
        let now = sim.now
        let source = sim.aliceAddress
        let result = buffer.withUnsafeMutableBytes { b in
            sim.bob.decapsulate(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(b)[0..<n]), from: source,
                                into: b, now: now)
        }
        #expect(result == .packet(16..<116))
        #expect(Array(buffer[16..<116]) == packet)
    }

    @Test("an output buffer too small for the result drops instead of writing past it")
    func smallBuffers() throws {
        var sim = Simulator()
        sim.establish()
        var tiny = [UInt8](repeating: 0, count: 40)
        #expect(sim.alice.encapsulate(ipv4Packet(size: 60), into: &tiny, now: sim.now) == .drop(.bufferTooSmall))
        sim.send(from: .alice, ipv4Packet(size: 60))
        let datagram = try #require(sim.network.popLast()?.bytes)
        #expect(sim.bob.decapsulate(datagram, from: sim.aliceAddress, into: &tiny, now: sim.now) == .drop(.bufferTooSmall))
        // The counter was not consumed by the failed attempt.
        var big = [UInt8](repeating: 0, count: 256)
        #expect(sim.bob.decapsulate(datagram, from: sim.aliceAddress, into: &big, now: sim.now) == .packet(16..<76))
    }

    @Test("decrypted bytes that are not an IPv4 or IPv6 packet of a consistent length are dropped")
    func notAnIPPacket() {
        var sim = Simulator()
        sim.establish()
        var bogusLength = ipv4Packet(size: 40)
        bogusLength[3] = 200
        for plaintext in [[UInt8](repeating: 0x11, count: 40), bogusLength, [0x60] + [UInt8](repeating: 0, count: 10)] {
            sim.send(from: .alice, plaintext)
            sim.deliverAll()
            #expect(sim.results[.bob]?.last == .drop(.malformed))
        }
        var v6 = [UInt8](repeating: 0, count: 48)
        v6[0] = 0x60
        v6[5] = 8
        sim.send(from: .alice, v6)
        sim.deliverAll()
        #expect(sim.received[.bob]?.last == v6)
    }

    @Test("a session refuses to send at REJECT_AFTER_MESSAGES and a new handshake carries on")
    func rejectAfterMessagesSending() {
        var sim = Simulator(limits: Limits(rekeyAfterMessages: 1_000, rejectAfterMessages: 4))
        sim.establish()  // counter 0
        for _ in 0..<3 { #expect(sim.send(from: .alice, ipv4Packet(size: 20)) == .datagram(64)) }
        sim.deliverAll()
        sim.advance(seconds: 6)  // past the REKEY_TIMEOUT rate limit on initiations
        #expect(sim.send(from: .alice, ipv4Packet(size: 20, fill: 9)) == .handshakeInitiation(148))
        sim.deliverAll()
        #expect(sim.received[.bob]?.count == 5)
        #expect(sim.received[.bob]?.last == ipv4Packet(size: 20, fill: 9))
    }

    @Test("a counter at or beyond the receiver's REJECT_AFTER_MESSAGES is refused")
    func rejectAfterMessagesReceiving() {
        var sim = Simulator()
        sim.bob = Peer(localKey: sim.bobKey,
                       configuration: PeerConfiguration(publicKey: sim.aliceKey.publicKey,
                                                        limits: Limits(rekeyAfterMessages: 100, rejectAfterMessages: 3)),
                       wallClock: WallClock(anchor: wallClockStart, at: sim.now), indexSlot: 2)
        sim.establish()  // counter 0
        sim.send(from: .alice, ipv4Packet(size: 20))  // 1
        sim.send(from: .alice, ipv4Packet(size: 20))  // 2
        sim.send(from: .alice, ipv4Packet(size: 20))  // 3: refused
        sim.deliverAll()
        #expect(sim.received[.bob]?.count == 3)
        #expect(sim.results[.bob]?.last == .drop(.counterExhausted))
    }
}
