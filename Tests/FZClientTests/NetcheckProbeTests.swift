import FZCore
import FZTestSupport
import STUN
import Testing

@testable import FZClient

let relayA = SocketAddress(IPv4Address(198, 18, 0, 10), 3478)
let relayB = SocketAddress(IPv4Address(198, 18, 0, 11), 3478)
let relay6 = SocketAddress(IPv6Address("2001:db8::10")!, 3478)
let mappedHere = SocketAddress(IPv4Address(198, 18, 1, 2), 40_000)

/// Drives a probe on a manual clock, the way the runner drives it on a real one.
struct ProbeHarness {
    var clock = ManualClock()
    var probe: NetcheckProbe
    /// Every request sent: where, its transaction ID, when.
    var sent: [(to: SocketAddress, id: TransactionID, at: Timestamp)] = []

    init(relays: [SocketAddress], configuration: NetcheckProbe.Configuration = .init()) {
        probe = NetcheckProbe(relays: relays, configuration: configuration, now: clock.now)
    }

    /// Collects every request due now.
    mutating func flush() {
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let out = buffer.withUnsafeMutableBytes { probe.pollTransmit(now: clock.now, into: $0) }
            guard let (to, count) = out else { return }
            let message = try! Message.decode(Array(buffer[..<count]))
            #expect(message.type == MessageType(method: .binding, messageClass: .request))
            #expect(message.hasFingerprint)
            sent.append((to, message.transactionID, clock.now))
        }
    }

    /// Advances to the probe's next timeout (or `by`, whichever is sooner), then flushes.
    mutating func advance(by d: Duration) {
        clock.advance(by: d)
        probe.handleTimeout(now: clock.now)
        flush()
    }

    mutating func answer(_ request: (to: SocketAddress, id: TransactionID, at: Timestamp), mapped: SocketAddress,
                         from: SocketAddress? = nil, xor: Bool = true) {
        let attribute: Attribute = xor ? .xorMappedAddress(mapped) : .mappedAddress(mapped)
        let response = Message(type: MessageType(method: .binding, messageClass: .successResponse),
                               transactionID: request.id, attributes: [attribute]).encode(fingerprint: true)
        response.withUnsafeBytes { probe.handleInput($0, from: from ?? request.to, now: clock.now) }
    }

    func requests(to relay: SocketAddress) -> [(to: SocketAddress, id: TransactionID, at: Timestamp)] {
        sent.filter { $0.to == relay }
    }
}

@Suite("netcheck probe: when to send, what counts as an answer")
struct NetcheckProbeTests {
    @Test("every relay gets a request at once")
    func firstRequestsGoOutImmediately() {
        var h = ProbeHarness(relays: [relayA, relayB, relay6])
        h.flush()
        #expect(h.sent.map(\.to) == [relayA, relayB, relay6])
        #expect(Set(h.sent.map(\.id)).count == 3)
        #expect(h.probe.pollTimeout() == h.clock.now + .milliseconds(250))
    }

    @Test("an answered request is followed at once by the next, until the samples are in")
    func answersDriveTheNextRequest() {
        var h = ProbeHarness(relays: [relayA])
        h.flush()
        for i in 1...5 {
            h.clock.advance(by: .milliseconds(10))
            h.answer(h.sent.last!, mapped: mappedHere)
            h.flush()
            #expect(h.probe.relays[0].rtts.count == i)
            #expect(h.sent.count == min(i + 1, 5))
        }
        #expect(h.probe.isFinished)
        #expect(h.probe.pollTimeout() == .distantFuture)
        #expect(h.probe.relays[0].rtts == Array(repeating: .milliseconds(10), count: 5))
        #expect(h.probe.relays[0].mapped == Array(repeating: mappedHere, count: 5))
    }

    @Test("a lost request is retransmitted after 250 ms under a new transaction ID")
    func lossIsRetransmitted() {
        var h = ProbeHarness(relays: [relayA])
        h.flush()
        h.advance(by: .milliseconds(249))
        #expect(h.sent.count == 1)
        h.advance(by: .milliseconds(1))
        #expect(h.sent.count == 2)
        #expect(h.sent[0].id != h.sent[1].id)
        #expect(h.probe.relays[0].sent == 2)
    }

    @Test("a late answer to an earlier attempt is a correct sample measured from its own send")
    func lateAnswerCountsFromItsOwnSend() {
        var h = ProbeHarness(relays: [relayA])
        h.flush()
        h.advance(by: .milliseconds(250))
        h.clock.advance(by: .milliseconds(50))
        h.answer(h.sent[0], mapped: mappedHere)
        #expect(h.probe.relays[0].rtts == [.milliseconds(300)])
        // The retransmission's own answer still counts too.
        h.answer(h.sent[1], mapped: mappedHere)
        #expect(h.probe.relays[0].rtts == [.milliseconds(300), .milliseconds(50)])
    }

    @Test("a relay that never answers ends the check at the budget, never later")
    func unreachableRelayEndsAtTheBudget() {
        var h = ProbeHarness(relays: [relayA, relayB])
        h.flush()
        var elapsed: Duration = .zero
        while !h.probe.isFinished {
            let wait = h.probe.pollTimeout() - h.clock.now
            #expect(wait > .zero)
            elapsed += wait
            h.advance(by: wait)
        }
        #expect(elapsed == .milliseconds(1500))
        #expect(h.probe.relays.allSatisfy { $0.rtts.isEmpty })
        // One request per 250 ms: at 0, 250, ..., 1250 ms.
        #expect(h.requests(to: relayB).count == 6)
        #expect(h.probe.pollTransmit(now: h.clock.now, into: UnsafeMutableRawBufferPointer(start: nil, count: 0)) == nil)
    }

    @Test("answers from another address, duplicates, requests and garbage are dropped and counted")
    func strangersAreDropped() {
        var h = ProbeHarness(relays: [relayA, relayB])
        h.flush()
        h.answer(h.sent[0], mapped: mappedHere, from: relayB)  // relay B answering A's transaction
        #expect(h.probe.relays.allSatisfy { $0.rtts.isEmpty })
        h.answer(h.sent[0], mapped: mappedHere)
        h.answer(h.sent[0], mapped: mappedHere)  // duplicate
        #expect(h.probe.relays[0].rtts.count == 1)
        [UInt8](repeating: 0x41, count: 40).withUnsafeBytes { h.probe.handleInput($0, from: relayA, now: h.clock.now) }
        let request = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: h.sent[1].id)
            .encode()
        request.withUnsafeBytes { h.probe.handleInput($0, from: relayB, now: h.clock.now) }
        #expect(h.probe.dropped == 4)
        #expect(h.probe.relays[1].rtts.isEmpty)
    }

    @Test("an RFC 3489 server's MAPPED-ADDRESS is accepted when XOR-MAPPED-ADDRESS is missing")
    func plainMappedAddressIsAccepted() {
        var h = ProbeHarness(relays: [relayA])
        h.flush()
        h.answer(h.sent[0], mapped: mappedHere, xor: false)
        #expect(h.probe.relays[0].mapped == [mappedHere])
    }

    @Test("the check finishes early once every relay has its samples")
    func finishesEarly() {
        var h = ProbeHarness(relays: [relayA, relayB], configuration: .init(samplesPerRelay: 2))
        h.flush()
        for _ in 0..<2 {
            h.clock.advance(by: .milliseconds(5))
            for relay in [relayA, relayB] { h.answer(h.requests(to: relay).last!, mapped: mappedHere) }
            h.flush()
        }
        #expect(h.probe.isFinished)
        #expect(h.sent.count == 4)
    }
}
