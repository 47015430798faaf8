import FZCore
import FZTestSupport
import Testing

@testable import WireGuard

@Suite("Timers and session rotation (whitepaper §6)")
struct TimerTests {
    @Test("a fresh peer has nothing scheduled; a sent initiation schedules its retry at REKEY_TIMEOUT plus jitter")
    func deadlines() {
        var sim = Simulator()
        #expect(sim.alice.nextDeadline == .distantFuture)
        sim.send(from: .alice, ipv4Packet(size: 20))
        #expect(sim.alice.nextDeadline == sim.now + .milliseconds(5_100))
    }

    @Test("the receiver of data sends a keepalive after KEEPALIVE_TIMEOUT (10 s) if it sent nothing back")
    func passiveKeepalive() {
        var sim = Simulator()
        sim.establish()
        let t0 = sim.now
        sim.advance(seconds: 30)
        #expect(sim.sent(by: .bob, since: t0 + .nanoseconds(1)).map(\.time) == [t0 + .seconds(10)])
        #expect(sim.sent(by: .bob).last?.isKeepalive == true)
        #expect(sim.sent(by: .alice, since: t0 + .nanoseconds(1)).isEmpty, "a keepalive asks for no keepalive back")
    }

    @Test("a data reply in time replaces the keepalive; the other side then owes one 10 s later")
    func replyCancelsKeepalive() {
        var sim = Simulator()
        sim.establish()
        let t0 = sim.now
        sim.advance(seconds: 3)
        sim.send(from: .bob, ipv4Packet(size: 20))
        sim.advance(seconds: 30)
        #expect(sim.sent(by: .bob, since: t0 + .nanoseconds(1)).map(\.isData) == [true])
        let alice = sim.sent(by: .alice, since: t0 + .nanoseconds(1))
        #expect(alice.map(\.time) == [t0 + .seconds(13)])
        #expect(alice.allSatisfy { $0.isKeepalive })
    }

    @Test("an unanswered initiation is resent every REKEY_TIMEOUT (5 s) plus the injected jitter")
    func retransmitWithJitter() {
        let jitter = JitterSequence([.milliseconds(0), .milliseconds(111), .milliseconds(222), .milliseconds(333)])
        var sim = Simulator(jitter: jitter.source)
        sim.blackhole = [.bob]
        sim.send(from: .alice, ipv4Packet(size: 20))
        sim.advance(seconds: 30)
        let times = sim.sent(by: .alice).filter(\.isInitiation).map(\.time)
        let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
        #expect(gaps == [5_000, 5_111, 5_222, 5_333, 5_000].map { Duration.milliseconds($0) })
        // Every retry is a new initiation: new ephemeral key, new sender index.
        let initiations = sim.sent(by: .alice).filter(\.isInitiation).map(\.bytes)
        #expect(Set(initiations.map { Array($0[4..<40]) }).count == initiations.count)
    }

    @Test("retries stop after REKEY_ATTEMPT_TIME (90 s), queued packets are dropped, and new data starts over")
    func giveUp() {
        var sim = Simulator()
        sim.blackhole = [.bob]
        let t0 = sim.now
        sim.send(from: .alice, ipv4Packet(size: 20))
        sim.advance(seconds: 200)
        let times = sim.sent(by: .alice).filter(\.isInitiation).map(\.time)
        #expect(times.count == 18)
        #expect(times.last! < t0 + .seconds(90))
        #expect(sim.timerActions[.alice]?.contains(.handshakeGaveUp(droppedPackets: 1)) == true)
        #expect(sim.alice.queuedPacketCount == 0)
        #expect(sim.alice.stats.dropped[.handshakeFailed] == 1)
        #expect(sim.send(from: .alice, ipv4Packet(size: 20)) == .handshakeInitiation(148))
    }

    @Test("the initiator rekeys when it sends on a session older than REKEY_AFTER_TIME (120 s), without a gap")
    func rekeyAfterTime() throws {
        var sim = Simulator()
        sim.establish()
        let t0 = sim.now
        let oldIndex = sim.sent[2].bytes.withUnsafeBytes { $0.u32(at: 4) }
        sim.advance(seconds: 121)
        #expect(sim.send(from: .alice, ipv4Packet(size: 20, fill: 5)) == .datagram(64), "the old session still carries it")
        sim.advance(seconds: 1)
        let initiations = sim.sent(by: .alice, since: t0 + .nanoseconds(1)).filter(\.isInitiation)
        #expect(initiations.map(\.time) == [t0 + .seconds(121)])
        #expect(sim.received[.bob]?.last == ipv4Packet(size: 20, fill: 5))
        #expect(sim.send(from: .alice, ipv4Packet(size: 20, fill: 6)) == .datagram(64))
        let newData = try #require(sim.network.last?.bytes)
        #expect(newData.withUnsafeBytes { $0.u32(at: 4) } != oldIndex)
        #expect(newData.withUnsafeBytes { $0.u64(at: 8) } == 1, "counter 0 was the confirming keepalive")
        sim.deliverAll()
        #expect(sim.received[.bob]?.last == ipv4Packet(size: 20, fill: 6))
    }

    @Test("the responder does not rekey on time: only the initiator does, so they do not both at once")
    func responderDoesNotRekeyOnTime() {
        var sim = Simulator()
        sim.establish()
        let t0 = sim.now
        sim.advance(seconds: 121)
        #expect(sim.send(from: .bob, ipv4Packet(size: 20)) == .datagram(64))
        sim.advance(seconds: 1)
        #expect(sim.sent(since: t0 + .nanoseconds(1)).filter(\.isInitiation).isEmpty)
    }

    @Test("after REKEY_AFTER_MESSAGES either side starts a new handshake", arguments: [Side.alice, .bob])
    func rekeyAfterMessages(sender: Side) {
        var sim = Simulator(limits: Limits(rekeyAfterMessages: 5, rejectAfterMessages: 100))
        sim.establish()
        sim.advance(seconds: 6)
        let t1 = sim.now
        for i in 0..<5 { sim.send(from: sender, ipv4Packet(size: 20, fill: UInt8(i))) }
        sim.advance(seconds: 1)
        let initiations = sim.sent(since: t1).filter(\.isInitiation)
        #expect(initiations.map(\.from) == [sender])
        #expect(initiations.first?.time == t1)
        #expect(sim.alice.hasSession(at: sim.now) && sim.bob.hasSession(at: sim.now))
        #expect(sim.received[sender.other]?.count == (sender == .alice ? 6 : 5))
    }

    @Test("a session older than REJECT_AFTER_TIME (180 s) is used neither to receive nor to send")
    func rejectAfterTime() throws {
        var sim = Simulator()
        sim.establish()
        sim.advance(seconds: 179)
        #expect(sim.send(from: .bob, ipv4Packet(size: 20)) == .datagram(64))
        let late = try #require(sim.network.popLast()?.bytes)
        sim.clock.advance(seconds: 2)
        #expect(sim.deliver(late, to: .alice) == .drop(.sessionExpired))
        #expect(!sim.bob.hasSession(at: sim.now))
        #expect(sim.send(from: .bob, ipv4Packet(size: 21)) == .handshakeInitiation(148))
        sim.deliverAll()
        #expect(sim.received[.alice]?.last == ipv4Packet(size: 21))
    }

    @Test("an initiator still receiving near REJECT_AFTER_TIME rekeys once, at 165 s")
    func lastMinuteRekeyOnReceive() {
        var sim = Simulator()
        sim.establish()
        let t0 = sim.now
        sim.advance(seconds: 164)
        sim.send(from: .bob, ipv4Packet(size: 20))
        sim.advance(seconds: 0.5)
        #expect(sim.sent(since: t0 + .nanoseconds(1)).filter(\.isInitiation).isEmpty)
        sim.advance(seconds: 0.5)
        sim.send(from: .bob, ipv4Packet(size: 20))
        sim.advance(seconds: 0.5)
        let initiations = sim.sent(since: t0 + .nanoseconds(1)).filter(\.isInitiation)
        #expect(initiations.map(\.from) == [.alice])
        #expect(initiations.map(\.time) == [t0 + .seconds(165)])
    }

    @Test("data sent without any answer for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (+ jitter) starts a new handshake")
    func newHandshakeWhenUnanswered() {
        var sim = Simulator()
        sim.establish()
        let t0 = sim.now
        sim.blackhole = [.alice]  // everything Bob sends is lost
        sim.advance(seconds: 20)
        let initiations = sim.sent(by: .alice, since: t0 + .nanoseconds(1)).filter(\.isInitiation)
        #expect(initiations.first?.time == t0 + .milliseconds(15_100))
    }

    @Test("a persistent keepalive handshakes at once, then keeps an idle tunnel alive every interval")
    func persistentKeepalive() {
        var sim = Simulator(alicePersistentKeepalive: .seconds(25))
        let t0 = sim.now
        #expect(sim.alice.nextDeadline <= t0)
        sim.advance(seconds: 100)
        #expect(sim.sent.prefix(3).map(\.type) == [1, 2, 4])
        let keepalives = sim.sent(by: .alice).filter(\.isKeepalive).map(\.time)
        #expect(keepalives == [0, 25, 50, 75, 100].map { t0 + .seconds($0) })
        #expect(sim.sent(by: .bob).filter(\.isKeepalive).isEmpty)
    }

    @Test("all keys are erased after 3 × REJECT_AFTER_TIME (540 s) without a new handshake")
    func eraseKeys() {
        var sim = Simulator()
        sim.establish()
        sim.advance(seconds: 541)
        #expect(sim.timerActions[.alice]?.last == .keysErased)
        #expect(sim.timerActions[.bob]?.last == .keysErased)
        #expect(!sim.alice.hasSession(at: sim.now) && !sim.bob.hasSession(at: sim.now))
        #expect(sim.alice.current == nil && sim.alice.previous == nil && sim.alice.next == nil)
        #expect(sim.alice.nextDeadline == .distantFuture && sim.bob.nextDeadline == .distantFuture)
    }

    @Test("rotation: the initiator sends on the new session at once; the responder waits for the initiator's first packet")
    func rotationRules() throws {
        var sim = Simulator()
        sim.send(from: .alice, ipv4Packet(size: 20, fill: 1))
        let initiation = sim.network.removeFirst().bytes
        #expect(sim.deliver(initiation, to: .bob) == .handshakeResponse(92))
        #expect(!sim.bob.hasSession(at: sim.now))
        #expect(sim.bob.next != nil && sim.bob.current == nil)
        // Bob has data before confirmation: it is queued, not sent on the unconfirmed session.
        #expect(sim.send(from: .bob, ipv4Packet(size: 20, fill: 2)) == .handshakeInitiation(148))
        sim.network.removeLast()  // Bob's own initiation is lost
        let response = sim.network.removeFirst().bytes
        #expect(sim.deliver(response, to: .alice) == .handshakeCompleted(64))
        #expect(sim.alice.hasSession(at: sim.now), "the initiator may send at once")
        #expect(!sim.bob.hasSession(at: sim.now), "the confirmation is still in flight")
        let confirmation = sim.network.removeFirst().bytes
        #expect(sim.deliver(confirmation, to: .bob) == .packet(16..<36))
        #expect(sim.bob.hasSession(at: sim.now) && sim.bob.next == nil)
        sim.deliverAll()
        #expect(sim.received[.alice] == [ipv4Packet(size: 20, fill: 2)], "Bob's queued packet went out on confirmation")
    }

    @Test("after a rekey, packets still in flight on the previous session are accepted")
    func previousSessionStillReceives() throws {
        var sim = Simulator()
        sim.establish()
        sim.advance(seconds: 121)
        sim.send(from: .bob, ipv4Packet(size: 20, fill: 8))
        let inFlight = try #require(sim.network.popLast()?.bytes)
        sim.send(from: .alice, ipv4Packet(size: 20))
        sim.advance(seconds: 1)
        #expect(sim.alice.previous != nil)
        #expect(sim.deliver(inFlight, to: .alice) == .packet(16..<36))
        #expect(sim.received[.alice]?.last == ipv4Packet(size: 20, fill: 8))
    }
}
