import FZCore
import FZTestSupport
import STUN
import Testing

@testable import Connectivity

let lanA = "10.0.0.1:5000"
let lanB = "10.0.0.2:6000"
let relayA = "198.51.100.10:50000"
let relayB = "198.51.100.11:50001"

@Suite("ICE agent: connecting (RFC 8445 §6, §7)")
struct IceAgentConnectTests {
    @Test("two hosts on one LAN nominate the host pair within a few RTTs and agree on it")
    func hostPairNominated() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]])
        let start = net.now
        net.run(seconds: 1)
        let a = try #require(net.agents[0].nominated)
        let b = try #require(net.agents[1].nominated)
        #expect(a.remote.address == SocketAddress(lanB)! && a.local.kind == .host)
        #expect(b.remote.address == SocketAddress(lanA)!)
        #expect(net.agreeOnNominated())
        #expect(net.agents[0].state == .connected && net.agents[1].state == .connected)
        // 20 ms RTT: nominated within 4 RTTs of both sides having candidates.
        let nominatedAt = try #require(net.log.first { if case .nominated = $0.event { $0.agent == 1 } else { false } }?.at)
        #expect(nominatedAt - start <= .milliseconds(80))
        // The check carried what RFC 8445 §7.2.2 requires.
        #expect(net.agents[0].stats.checksSent >= 1 && net.agents[1].stats.successResponsesSent >= 1)
    }

    @Test("direct beats relayed even when relayed candidates are known first")
    func directPreferredOverRelay() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]], relays: [relayA, relayB])
        net.run(seconds: 2)
        #expect(net.agents[0].nominated?.isRelayed == false)
        #expect(net.agents[0].selectedPair?.isRelayed == false && net.agents[1].selectedPair?.isRelayed == false)
        #expect(net.agreeOnNominated())
    }

    @Test("both controlling: the larger tie-breaker stays controlling, the other switches (487)")
    func roleConflictBothControlling() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]], roles: [.controlling, .controlling], tieBreakers: [10, 20])
        net.run(seconds: 1)
        #expect(net.agents[1].role == .controlling && net.agents[0].role == .controlled)
        #expect(net.events(0).contains(.roleChanged(.controlled)))
        #expect(net.agents[0].stats.roleConflicts + net.agents[1].stats.roleConflicts >= 1)
        #expect(net.agreeOnNominated())
    }

    @Test("both controlled: the larger tie-breaker becomes controlling")
    func roleConflictBothControlled() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]], roles: [.controlled, .controlled], tieBreakers: [30, 20])
        net.run(seconds: 1)
        #expect(net.agents[0].role == .controlling && net.agents[1].role == .controlled)
        #expect(net.agreeOnNominated())
    }

    @Test("behind a NAT that signals only its private host candidate, both sides learn peer-reflexive candidates")
    func peerReflexiveLearned() throws {
        var net = IceNetwork(hosts: [[lanA], ["192.0.2.20:7000"]], nats: [IceNetwork.NAT(publicIP: "203.0.113.1"), nil])
        net.run(seconds: 2)
        #expect(net.agents[1].stats.peerReflexiveRemote == 1)
        #expect(net.agents[0].stats.peerReflexiveLocal == 1)
        let b = try #require(net.agents[1].nominated)
        #expect(b.remote.kind == .peerReflexive && b.remote.address.ip == IPAddress("203.0.113.1")!)
        #expect(net.agents[0].localCandidates.contains { $0.kind == .peerReflexive && $0.address.ip == IPAddress("203.0.113.1")! })
        #expect(net.agreeOnNominated())
        // Peer-reflexive local candidates are not signalled (RFC 8445 §7.2.5.3.1).
        #expect(!net.events(0).contains { if case .newLocalCandidate(let c) = $0 { c.kind == .peerReflexive } else { false } })
    }

    @Test("both behind endpoint-independent NATs with port-restricted filtering: server-reflexive candidates punch through")
    func holePunchesThroughTwoNATs() throws {
        var net = IceNetwork(hosts: [[lanA], ["10.9.0.2:6000"]], relays: [relayA, relayB],
                             nats: [IceNetwork.NAT(publicIP: "203.0.113.1"), IceNetwork.NAT(publicIP: "203.0.113.2")],
                             serverReflexive: true)
        #expect(net.events(0).contains { if case .newLocalCandidate(let c) = $0 { c.kind == .serverReflexive } else { false } })
        net.run(seconds: 5)
        let a = try #require(net.agents[0].nominated)
        #expect(!a.isRelayed && a.remote.address.ip == IPAddress("203.0.113.2")!)
        // The pair is formed with the host base, never the server-reflexive candidate (§6.1.2.4).
        #expect(a.local.kind == .host)
        #expect(net.agreeOnNominated())
    }

    @Test("both behind endpoint-dependent (symmetric) NATs: direct cannot work, the relayed pair does")
    func symmetricNATsUseTheRelay() throws {
        var net = IceNetwork(hosts: [[lanA], ["10.9.0.2:6000"]], relays: [relayA, relayB],
                             nats: [IceNetwork.NAT(publicIP: "203.0.113.1", dependent: true),
                                    IceNetwork.NAT(publicIP: "203.0.113.2", dependent: true)],
                             serverReflexive: true)
        net.run(seconds: 10)
        #expect(net.agents[0].nominated?.isRelayed == true)
        #expect(net.agents[0].selectedPair?.isRelayed == true && net.agents[1].selectedPair?.isRelayed == true)
    }

    @Test("with every direct path blocked the relayed pair is usable within 300 ms")
    func relayedOnlyWhenDirectBlocked() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]], relays: [relayA, relayB])
        net.directCut = true
        let start = net.now
        net.run(seconds: 10)
        #expect(net.agents[0].nominated?.isRelayed == true)
        #expect(net.agreeOnNominated())
        let usable = try #require(net.firstSelected(0))
        #expect(usable - start <= .milliseconds(300))
        let all = net.selections(0)
        #expect(all.allSatisfy { $0.isRelayed })
    }

    @Test("nothing reachable: connectionFailed after the connect timeout, and then silence")
    func failsWhenNothingWorks() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]])
        net.directCut = true
        net.run(seconds: 20)
        #expect(net.events(0).contains(.connectionFailed) && net.events(1).contains(.connectionFailed))
        #expect(net.agents[0].state == .failed)
        let count = net.sent.count
        net.run(seconds: 60)
        #expect(net.sent.count == count)
        #expect(net.agents[0].nextDeadline == .distantFuture)
    }

    @Test("10 % loss still connects, directly")
    func connectsUnderLoss() {
        var net = IceNetwork(hosts: [[lanA], [lanB]], relays: [relayA, relayB])
        net.loss = 0.1
        net.run(seconds: 5)
        #expect(net.agents[0].selectedPair?.isRelayed == false)
        #expect(net.agreeOnNominated())
    }
}

@Suite("ICE agent: upgrade, failover and idle cost")
struct IceAgentLivenessTests {
    @Test("relayed first, then direct once it works: one upgrade, no flapping back")
    func upgradesRelayedToDirect() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]], relays: [relayA, relayB])
        net.directCut = true
        net.run(seconds: 3)
        #expect(net.agents[0].selectedPair?.isRelayed == true)
        net.directCut = false
        let opened = net.now
        net.run(seconds: 30)
        let upgradeAt = try #require(net.firstSelected(0, after: opened) { !$0.isRelayed })
        #expect(upgradeAt - opened <= .seconds(10))
        #expect(net.agents[0].nominated?.isRelayed == false)
        #expect(net.agents[1].selectedPair?.isRelayed == false)
        #expect(net.agreeOnNominated())
        let before = net.selections(0).count + net.selections(1).count
        net.run(seconds: 120)
        #expect(net.selections(0).count + net.selections(1).count == before)
    }

    @Test("a cut direct path moves traffic to the warm relayed pair within 2 s on both sides")
    func failsOverWithinTwoSeconds() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]], relays: [relayA, relayB])
        net.traffic = true
        net.run(seconds: 5)
        #expect(net.agents[0].selectedPair?.isRelayed == false)
        net.directCut = true
        let cut = net.now
        net.run(seconds: 5)
        for i in 0..<2 {
            let moved = try #require(net.firstSelected(i, after: cut) { $0.isRelayed }, "agent \(i)")
            #expect(moved - cut <= .seconds(2), "agent \(i) moved after \(moved - cut)")
            #expect(net.events(i, after: cut).contains { if case .pairFailed = $0 { true } else { false } })
            #expect(net.agents[i].selectedPair?.isRelayed == true)
        }
        #expect(net.agents[0].state == .connected)
        #expect(net.agreeOnNominated())
    }

    @Test("when traffic stops the agent goes back to idle checks: no busy loop, no spurious failover")
    func trafficStopsQuietly() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]], relays: [relayA, relayB])
        net.traffic = true
        net.run(seconds: 5)
        net.traffic = false
        let stopped = net.now
        let wakeups = net.wakeups
        net.run(seconds: 120)
        #expect(net.wakeups - wakeups < 200, "\(net.wakeups - wakeups) wakeups in 120 idle seconds")
        #expect(net.selections(0, after: stopped).isEmpty && net.selections(1, after: stopped).isEmpty)
        #expect(net.agents[0].selectedPair?.isRelayed == false)
    }

    @Test("an idle connection sends at most one check per 10 s per warm path after the first minute")
    func idleIsCheap() throws {
        var net = IceNetwork(hosts: [[lanA], [lanB]], relays: [relayA, relayB])
        net.run(seconds: 60)
        #expect(net.agents[0].state == .connected)
        let from = net.now
        net.run(seconds: 120)
        for i in 0..<2 {
            // Selected plus one warm backup: two paths, each ≤ 1 check per 10 s (and their answers).
            let sent = net.sent.filter { $0.agent == i && $0.at >= from }.count
            #expect(sent <= 2 * 2 * 12, "agent \(i) sent \(sent) in 120 s")
        }
        #expect(net.agents[0].state == .connected && net.agents[1].state == .connected)
        #expect(net.agents[0].selectedPair?.isRelayed == false)
    }
}

@Suite("ICE agent: hostile and malformed input")
struct IceAgentInputTests {
    static let via = IceVia.socket(SocketAddress(lanA)!)
    static let from = SocketAddress(lanB)!

    func agent() -> IceAgent {
        var a = IceAgent(config: IceAgentConfig(role: .controlled, local: IceCredentials(ufrag: "local", password: "local-password-123"),
                                                tieBreaker: 5))
        a.addLocalCandidate(.host(SocketAddress(lanA)!), now: .zero)
        a.setRemoteCredentials(IceCredentials(ufrag: "remote", password: "remote-password-456"), now: .zero)
        while a.pollEvent() != nil {}
        return a
    }

    func check(_ attrs: [Attribute], key: String? = "local-password-123", fingerprint: Bool = true) -> [UInt8] {
        Message(type: MessageType(method: .binding, messageClass: .request), transactionID: .random(), attributes: attrs)
            .encode(integrity: key.map { MessageIntegrity(key: Array($0.utf8)) }, fingerprint: fingerprint)
    }

    func feed(_ a: inout IceAgent, _ bytes: [UInt8]) -> Bool {
        a.handleInbound(bytes, from: Self.from, via: Self.via, now: .zero)
    }

    /// The code of the agent's answer (0 for success), nil when it sent nothing.
    func answer(_ a: inout IceAgent) throws -> Message? {
        guard let t = a.pollTransmit() else { return nil }
        #expect(t.destination == Self.from && t.via == Self.via)
        return try Message.decode(t.bytes)
    }

    func code(_ a: inout IceAgent) throws -> Int? {
        guard let m = try answer(&a) else { return nil }
        return m.errorCode?.code ?? 0
    }

    @Test("a good check is answered with XOR-MAPPED-ADDRESS, signed with our password, and teaches a prflx candidate")
    func answersGoodCheck() throws {
        var a = agent()
        let ok = feed(&a, check([.username("local:remote"), .priority(1234), .iceControlling(9)]))
        #expect(ok)
        let r = try unwrap(try answer(&a))
        #expect(r.type.messageClass == .successResponse && r.xorMappedAddress == Self.from)
        #expect(r.checkIntegrity(key: Array("local-password-123".utf8)) == .valid(.sha1) && r.hasFingerprint)
        #expect(a.remoteCandidates.first?.kind == .peerReflexive && a.remoteCandidates.first?.priority == 1234)
        // The triggered check goes out at the next pacing slot, signed with the remote password.
        a.handleTimeout(now: .zero)
        let t = try unwrap(a.pollTransmit())
        let c = try Message.decode(t.bytes)
        #expect(c.username == "remote:local" && c.iceControlled == 5 && c.priority != nil && c.hasFingerprint)
        #expect(c.checkIntegrity(key: Array("remote-password-456".utf8)) == .valid(.sha1))
    }

    @Test("missing integrity is 400, a wrong password 401, another ufrag not ours; all counted")
    func rejectsBadChecks() throws {
        var a = agent()
        var ok = feed(&a, check([.username("local:remote"), .priority(1), .iceControlling(9)], key: nil))
        #expect(ok)
        var c = try code(&a)
        #expect(c == 400)
        ok = feed(&a, check([.username("local:remote"), .priority(1), .iceControlling(9)], key: "wrong"))
        c = try code(&a)
        #expect(ok && c == 401)
        ok = feed(&a, check([.username("other:remote"), .priority(1), .iceControlling(9)]))
        c = try code(&a)
        #expect(!ok && c == nil)
        ok = feed(&a, check([.username("local:remote"), .iceControlling(9)]))
        c = try code(&a)
        #expect(ok && c == 400)
        ok = feed(&a, check([.username("local:remote"), .priority(1), .iceControlling(9)], fingerprint: false))
        c = try code(&a)
        #expect(ok && c == nil)
        #expect(a.stats.badRequests == 2 && a.stats.unauthenticatedDropped == 1 && a.stats.foreignDropped == 1)
        #expect(a.stats.malformedDropped == 1)
        #expect(a.remoteCandidates.isEmpty)
    }

    @Test("role conflict: controlled with the smaller tie-breaker answers 487 to ICE-CONTROLLED")
    func answersRoleConflict() throws {
        var a = agent()
        _ = feed(&a, check([.username("local:remote"), .priority(1), .iceControlled(6)]))
        let c = try code(&a)
        #expect(c == 487)
        #expect(a.role == .controlled)
        var b = agent()
        _ = feed(&b, check([.username("local:remote"), .priority(1), .iceControlled(4)]))
        let d = try code(&b)
        #expect(d == 0)
        #expect(b.role == .controlling)
    }

    @Test("forged and unmatched responses are dropped and counted; the check keeps retransmitting")
    func dropsForgedResponses() throws {
        var a = agent()
        a.addRemoteCandidate(.host(Self.from), now: .zero)
        a.handleTimeout(now: .zero)
        let t = try unwrap(a.pollTransmit())
        let request = try Message.decode(t.bytes)
        let forged = Message(type: MessageType(method: .binding, messageClass: .successResponse),
                             transactionID: request.transactionID, attributes: [.xorMappedAddress(SocketAddress(lanA)!)])
        var ok = feed(&a, forged.encode(integrity: MessageIntegrity(key: Array("guess".utf8)), fingerprint: true))
        #expect(ok)
        ok = feed(&a, forged.encode(fingerprint: true))
        #expect(ok)
        #expect(a.stats.unauthenticatedDropped == 2)
        let stray = Message(type: MessageType(method: .binding, messageClass: .successResponse), transactionID: .random())
        ok = feed(&a, stray.encode(fingerprint: true))
        #expect(!ok)
        #expect(a.stats.unmatchedDropped == 1)
        a.handleTimeout(now: .zero + .milliseconds(250))
        let again = try Message.decode(try unwrap(a.pollTransmit()).bytes)
        #expect(again.transactionID == request.transactionID)
        #expect(a.checklist.allSatisfy { !$0.succeeded })
    }

    @Test("random bytes and mutated checks never trap; non-STUN is left to the caller")
    func fuzzedInput() {
        var a = agent()
        var rng = SplitMix64(seed: 0xF022)
        let wg = feed(&a, [1, 0, 0, 0, 0xAA, 0xBB])  // WireGuard-ish
        #expect(!wg)
        let good = check([.username("local:remote"), .priority(1), .iceControlling(9), .useCandidate])
        var consumed = 0
        var unchanged = 0
        for n in 0..<20_000 {
            var b: [UInt8]
            if n % 2 == 0 {
                b = good
                for _ in 0..<Int(rng.next() % 3) + 1 { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                b = (0..<Int(rng.next() % 120)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                if b.count >= 8 && n % 3 == 0 { b[0] = 0; b[4] = 0x21; b[5] = 0x12; b[6] = 0xA4; b[7] = 0x42 }
            }
            if b == good { unchanged += 1 }
            if feed(&a, b) { consumed += 1 }
            while a.pollTransmit() != nil {}
        }
        #expect(consumed > 0)
        #expect(a.stats.malformedDropped + a.stats.unauthenticatedDropped > 1000)
        // Only the mutations that rewrote a byte with its own value are answered: none forged an HMAC.
        #expect(a.stats.successResponsesSent == UInt64(unchanged))
    }
}

@Suite("ICE agent: seeded random cuts")
struct IceAgentPropertyTests {
    @Test("random direct-path cuts and restores under traffic: never disconnected, on the relay within 2 s of each cut, no flapping",
          arguments: 1...12)
    func randomCuts(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var net = IceNetwork(hosts: [[lanA], [lanB]], relays: [relayA, relayB])
        net.rng = SplitMix64(seed: seed &* 31)
        net.loss = Double(rng.next() % 5) / 100  // 0-4 % background loss
        net.traffic = true
        net.run(seconds: 3)
        let start = net.now
        var toggles = 0
        var cutSince: Timestamp?
        for _ in 0..<8 {
            let phase = 3 + Double(rng.next() % 20)
            net.directCut.toggle()
            toggles += 1
            cutSince = net.directCut ? net.now : nil
            // Sample every 100 ms through the phase.
            for _ in 0..<Int(phase * 10) {
                net.run(seconds: 0.1)
                if let since = cutSince, net.now - since >= .seconds(2) {
                    for i in 0..<2 {
                        #expect(net.agents[i].selectedPair?.isRelayed == true,
                                "seed \(seed): agent \(i) still direct \(net.now - since) after the cut")
                    }
                }
            }
        }
        for i in 0..<2 {
            #expect(!net.events(i, after: start).contains(.disconnected), "seed \(seed): agent \(i) disconnected")
            // Each toggle justifies at most one move per side, plus the controlled side's
            // tentative choice being overridden by a nomination.
            let moves = net.selections(i, after: start).count
            #expect(moves <= 2 * toggles, "seed \(seed): agent \(i) moved \(moves) times for \(toggles) toggles")
        }
    }
}

@Suite("ICE agent: seeded random chaos behind NATs")
struct IceAgentChaosTests {
    enum Event: CaseIterable { case directCut, relayRestart, lossBurst, mappingExpiry }

    @Test("loss bursts, cuts, NAT mapping expiry and relay restarts: data never stops longer than 2 s while a path exists",
          arguments: 1...20)
    func chaos(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        // Both behind endpoint-independent NATs with port-dependent filtering: a hole punch, and a
        // relayed candidate on each side.
        var net = IceNetwork(hosts: [[lanA], ["10.9.0.2:6000"]], relays: [relayA, relayB],
                             nats: [IceNetwork.NAT(publicIP: "203.0.113.1"), IceNetwork.NAT(publicIP: "203.0.113.2")],
                             serverReflexive: true)
        net.rng = SplitMix64(seed: seed &* 7919)
        net.traffic = true
        net.data = true
        net.run(seconds: 3)
        try #require(net.agents[0].selectedPair != nil, "seed \(seed): no connection to start from")
        var log: [String] = []
        for _ in 0..<8 {
            let event = Event.allCases[Int(rng.next() % UInt64(Event.allCases.count))]
            let length = 1 + Double(rng.next() % 30) / 10  // 1-4 s
            let start = net.now
            log.append("\(event) \(length)s at \(start)")
            switch event {
            case .directCut: net.directCut = true
            case .relayRestart: net.relaysDown = true
            case .lossBurst: net.loss = 0.3
            case .mappingExpiry:
                // The mapping goes; the engine's next relay probe learns the new one and signals it
                // (here at once: the engine probes every 25 s).
                let side = Int(rng.next() % 2)
                net.nats[side]!.expireMappings()
                let server = SocketAddress("198.51.100.200:3478")!
                let host = net.hosts[side][0]
                let mapped = net.nats[side]!.outbound(host, to: server)
                net.agents[side].addLocalCandidate(.serverReflexive(mapped, base: host, server: server), now: net.now)
                net.pump()
            }
            net.run(seconds: length)
            net.directCut = false
            net.relaysDown = false
            net.loss = 0
            // Settle, then the next event.
            net.run(seconds: 4)
            // One path (direct or relayed) stayed up throughout: data keeps flowing both ways,
            // with a gap no longer than the 2 s failover bound (plus a data interval). A mapping
            // expiry is harsher: every pair through that NAT dies at once, the warm backup
            // included (its far end saw the old port), so the agent finds the surviving pair
            // (through its own relay, or the new server-reflexive one) on the retry round after
            // the 1.5 s liveness bound: 3.5 s.
            let bound: Duration = event == .mappingExpiry ? .milliseconds(3500) : .milliseconds(2100)
            for i in 0..<2 {
                let gap = net.longestGap(i, from: start, to: net.now)
                #expect(gap <= bound, "seed \(seed): agent \(i) had no data for \(gap) after \(log.last!); events: \(log)")
            }
        }
        for i in 0..<2 {
            #expect(!net.events(i).contains(.connectionFailed), "seed \(seed): agent \(i) gave up; events: \(log)")
        }
    }
}
