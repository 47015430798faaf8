import FZCore
import Testing

@testable import WireGuard

@Suite("MACs and cookies under load (whitepaper §5.3, §5.4.4, §5.4.7)")
struct CookieTests {
    @Test("under load, an initiation without MAC2 gets a cookie reply; the retry carries MAC2 and completes")
    func cookieRoundTrip() {
        var sim = Simulator()
        sim.underLoad = [.bob]
        sim.send(from: .alice, ipv4Packet(size: 40))
        sim.deliverAll()
        #expect(sim.sent.map(\.type) == [1, 3])
        #expect(sim.sent[1].bytes.count == 64)
        #expect(sim.results[.bob] == [.cookieReply(64)])
        #expect(sim.results[.alice] == [.cookieAccepted])
        #expect(!sim.bob.hasSession(at: sim.now), "no state and no DH before a valid MAC2")
        #expect(sim.bob.stats.cookieRepliesSent == 1)

        // The retransmission after REKEY_TIMEOUT + jitter carries MAC2 and is answered.
        sim.advance(seconds: 5.1)
        let retry = sim.sent[2]
        #expect(retry.isInitiation)
        #expect(!retry.bytes[132..<148].allSatisfy { $0 == 0 }, "MAC2 present")
        #expect(sim.sent.dropFirst(2).map(\.type) == [1, 2, 4])
        #expect(sim.received[.bob]?.count == 1)
    }

    @Test("a cookie is used for two minutes only; afterwards MAC2 is zero again")
    func cookieLifetime() {
        var sim = Simulator()
        sim.underLoad = [.bob]
        sim.send(from: .alice, ipv4Packet(size: 40))
        sim.deliverAll()
        #expect(sim.alice.cookies.hasFreshCookie(at: sim.now))
        sim.underLoad = []
        sim.advance(seconds: 119)
        #expect(sim.alice.cookies.hasFreshCookie(at: sim.now))
        sim.advance(seconds: 1)
        #expect(!sim.alice.cookies.hasFreshCookie(at: sim.now))
        let initiation = sim.alice.makeInitiation(now: sim.now, isRetry: false)!
        #expect(initiation[132..<148].allSatisfy { $0 == 0 })
    }

    @Test("the cookie secret rotates every two minutes: a cookie made with the old secret stops passing MAC2")
    func secretRotation() {
        let responder = PrivateKey.generate()
        var checker = CookieChecker(localPublic: responder.publicKey)
        var jar = CookieJar(peerPublic: responder.publicKey)
        let source = SocketAddress("192.0.2.1:51820")!
        var message = [UInt8](repeating: 0x42, count: 148)
        message.replaceSubrange(0..<4, with: [1, 0, 0, 0])
        let t0 = Timestamp.seconds(1_000)

        func stampAndCheck(at now: Timestamp) -> Bool {
            message.withUnsafeMutableBytes { jar.stamp($0, .initiation, now: now) }
            return message.withUnsafeBytes { m in
                #expect(checker.hasValidMAC1(m, .initiation))
                return checker.hasValidMAC2(m, .initiation, source: source, now: now)
            }
        }
        func fetchCookie(at now: Timestamp) {
            var reply = [UInt8](repeating: 0, count: 64)
            _ = message.withUnsafeBytes { m in
                reply.withUnsafeMutableBytes {
                    checker.writeCookieReply(to: m, .initiation, receiver: 7, source: source, now: now, into: $0)
                }
            }
            #expect(reply.withUnsafeBytes { jar.consumeReply($0, now: now) })
        }

        #expect(!stampAndCheck(at: t0), "no cookie yet")
        fetchCookie(at: t0)  // the secret is made now
        #expect(stampAndCheck(at: t0 + .seconds(1)))
        fetchCookie(at: t0 + .seconds(60))  // same secret, cookie fresh until t0 + 180 s
        #expect(stampAndCheck(at: t0 + .seconds(119)))
        #expect(!stampAndCheck(at: t0 + .seconds(121)), "the secret is older than two minutes")
        fetchCookie(at: t0 + .seconds(121))  // a new secret
        #expect(stampAndCheck(at: t0 + .seconds(122)))
    }

    @Test("a cookie is bound to the source address: MAC2 from another address is not valid")
    func cookieBoundToAddress() {
        var sim = Simulator()
        sim.underLoad = [.bob]
        sim.send(from: .alice, ipv4Packet(size: 40))
        sim.advance(seconds: 5.1)
        let retry = sim.sent(by: .alice).last { $0.isInitiation }!
        let checker = sim.bob.checker
        retry.bytes.withUnsafeBytes { message in
            #expect(checker.hasValidMAC2(message, .initiation, source: sim.aliceAddress, now: sim.now))
            #expect(!checker.hasValidMAC2(message, .initiation, source: SocketAddress("192.0.2.1:51821")!, now: sim.now))
            #expect(!checker.hasValidMAC2(message, .initiation, source: SocketAddress("192.0.2.2:51820")!, now: sim.now))
        }
    }

    @Test("under load the initiator also demands MAC2 on the response, and the exchange still completes")
    func responseUnderLoad() {
        var sim = Simulator()
        sim.underLoad = [.alice]
        sim.send(from: .alice, ipv4Packet(size: 40))
        sim.deliverAll()
        #expect(sim.sent.map(\.type) == [1, 2, 3])
        #expect(sim.results[.bob]?.last == .cookieAccepted)
        #expect(!sim.alice.hasSession(at: sim.now))
        // Alice's retry is answered by a response that now carries Bob's cookie.
        sim.advance(seconds: 5.1)
        #expect(sim.alice.hasSession(at: sim.now))
        #expect(sim.received[.bob]?.count == 1)
    }

    @Test("a cookie reply can be written over the message it answers, in the datagram's own buffer")
    func cookieReplyInPlace() throws {
        var sim = Simulator()
        sim.send(from: .alice, ipv4Packet(size: 40))
        sim.deliver(sim.network.removeFirst().bytes, to: .bob)
        let response = sim.network.removeFirst().bytes
        var buffer = response + [UInt8](repeating: 0, count: 100)
        let now = sim.now
        let source = sim.bobAddress
        let result = buffer.withUnsafeMutableBytes { b in
            sim.alice.decapsulate(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(b)[0..<92]), from: source,
                                  into: b, now: now, underLoad: true)
        }
        #expect(result == .cookieReply(64))
        // MAC1 of the response (the reply's associated data) overlaps the reply's own bytes.
        #expect(sim.deliver(Array(buffer[0..<64]), to: .bob) == .cookieAccepted)
    }

    @Test("a cookie reply with a bad tag, or for an index that is not ours, is dropped")
    func forgedCookieReplies() {
        var sim = Simulator()
        sim.underLoad = [.bob]
        sim.send(from: .alice, ipv4Packet(size: 40))
        sim.deliver(sim.network.removeFirst().bytes, to: .bob)
        let reply = sim.network.removeFirst().bytes
        var badTag = reply
        badTag[63] ^= 1
        #expect(sim.deliver(badTag, to: .alice) == .drop(.authenticationFailed))
        var otherIndex = reply
        otherIndex[4] ^= 1
        #expect(sim.deliver(otherIndex, to: .alice) == .drop(.unknownReceiver))
        #expect(sim.deliver(reply, to: .alice) == .cookieAccepted)
        #expect(sim.deliver(reply, to: .alice) == .drop(.authenticationFailed), "one cookie per MAC1")
    }

    @Test("a handshake message with a wrong MAC1 is dropped without a cookie reply, even under load")
    func badMAC1UnderLoad() {
        var sim = Simulator()
        sim.underLoad = [.bob]
        sim.send(from: .alice, ipv4Packet(size: 40))
        var initiation = sim.network.removeFirst().bytes
        initiation[120] ^= 1
        #expect(sim.deliver(initiation, to: .bob) == .drop(.invalidMAC1))
        #expect(sim.bob.stats.cookieRepliesSent == 0)
    }
}

extension CookieJar {
    func hasFreshCookie(at now: Timestamp) -> Bool { hasFreshCookie(now: now) }
}
