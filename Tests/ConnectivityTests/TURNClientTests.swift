import FZCore
import FZCrypto
import FZTestSupport
import STUN
import TURN
import Testing

@testable import Connectivity

@Suite("TURN client: allocation and authentication (RFC 8656 §7, RFC 8489 §9.2)")
struct TURNClientAllocationTests {
    @Test("the 401 dance allocates with SHA-256 keys when the server offers them")
    func allocatesWithSHA256() throws {
        var sim = Simulation()
        let relayed = try unwrap(sim.allocate())
        #expect(sim.server.sockets.open == [relayed])
        #expect(sim.events == [.allocated(relayed: relayed, mapped: clientAddress, lifetime: .seconds(600))])
        #expect(sim.client.auth?.algorithm == .sha256)
        // The second Allocate echoes the offer and names its choice, signed with SHA-256 (§9.2.4).
        let second = try #require(sim.sent.last?.message)
        #expect(second.passwordAlgorithms == [.sha256, .md5])
        #expect(second.passwordAlgorithm == .sha256)
        #expect(second.messageIntegritySHA256 != nil)
        #expect(sim.server.stats.challenges == 1)
        #expect(sim.client.stats.requestsSent == 2)
    }

    @Test("with SHA-256 disallowed the client negotiates MD5 and MESSAGE-INTEGRITY")
    func allocatesWithMD5() throws {
        var sim = Simulation { $0.allowSHA256 = false }
        let relayed = try unwrap(sim.allocate())
        #expect(sim.server.sockets.open == [relayed])
        let second = try #require(sim.sent.last?.message)
        #expect(second.passwordAlgorithm == .md5)
        #expect(second.messageIntegrity != nil && second.messageIntegritySHA256 == nil)
    }

    @Test("PASSWORD-ALGORITHMS without the nonce cookie is ignored: MD5 without negotiation")
    func algorithmsWithoutCookieAreIgnored() throws {
        var client = TURNClient(config: TURNClientConfig(
            server: serverAddress, credentials: TURNCredentials(username: "alice", password: "secret")))
        client.allocate(now: .zero)
        let first = try Message.decode(try unwrap(client.pollTransmit()).bytes)
        #expect(first.messageIntegrity == nil && first.username == nil)
        let challenge = Message(
            type: MessageType(method: .allocate, messageClass: .errorResponse), transactionID: first.transactionID,
            attributes: [.errorCode(.unauthenticated), .realm(realm), .nonce("plain-nonce"), .passwordAlgorithms([.sha256, .md5])])
        #expect(client.handle(datagram: challenge.encode(), from: serverAddress, now: .zero) == .none)
        let second = try Message.decode(try unwrap(client.pollTransmit()).bytes)
        #expect(second.passwordAlgorithm == nil && second.passwordAlgorithms == nil)
        #expect(second.nonce == "plain-nonce" && second.username == "alice" && second.realm == realm)
        let md5 = LongTermCredentials.key(username: "alice", realm: realm, password: "secret")
        #expect(second.checkIntegrity(key: md5) == .valid(.sha1))
    }

    @Test("REQUESTED-ADDRESS-FAMILY goes out only when asked for")
    func requestedFamily() throws {
        var c = TURNClient(config: {
            var c = TURNClientConfig(server: serverAddress, credentials: TURNCredentials(username: "alice", password: "secret"))
            c.requestedAddressFamily = .v6
            return c
        }())
        c.allocate(now: .zero)
        let first = try Message.decode(try unwrap(c.pollTransmit()).bytes)
        #expect(first.requestedAddressFamily == .v6)
        var plain = TURNClient(config: TURNClientConfig(server: serverAddress, credentials: TURNCredentials(username: "a", password: "b")))
        plain.allocate(now: .zero)
        #expect(try Message.decode(try unwrap(plain.pollTransmit()).bytes).requestedAddressFamily == nil)
    }

    @Test("TURN REST credentials minted from the shared secret allocate")
    func allocatesWithRESTCredentials() throws {
        var sim = Simulation(credentials: .rest(secret: "rest-secret", name: "alice", expiry: unixAtZero + 86_400))
        #expect(sim.allocate() != nil)
        var expired = Simulation(credentials: .rest(secret: "rest-secret", name: "alice", expiry: unixAtZero - 1))
        #expect(expired.allocate() == nil)
        #expect(expired.events == [.allocationFailed(.unauthenticated)])
    }

    @Test("a wrong password fails the allocation after one authenticated try")
    func wrongPasswordFails() {
        var sim = Simulation(credentials: TURNCredentials(username: "alice", password: "wrong"))
        #expect(sim.allocate() == nil)
        #expect(sim.events == [.allocationFailed(.unauthenticated)])
        #expect(sim.client.state == .failed(.unauthenticated))
        #expect(sim.requests(.allocate).count == 2)
        #expect(sim.client.nextDeadline == .distantFuture)
    }

    @Test("a stale nonce (438) on refresh is replaced and the refresh retried")
    func staleNonceOnRefresh() throws {
        var sim = Simulation(server: makeServer { $0.nonceLifetime = .seconds(100) })
        let relayed = try unwrap(sim.allocate())
        sim.advance(seconds: 481)
        #expect(sim.client.stats.staleNonces == 1)
        #expect(sim.server.stats.staleNonces == 1)
        #expect(sim.events.last == .refreshed(lifetime: .seconds(600)))
        #expect(sim.requests(.refresh).count == 2, "the refused refresh and its retry")
        #expect(sim.client.relayedAddress == relayed)
    }

    @Test("refreshes keep the allocation alive well past its first lifetime")
    func refreshKeepsAllocation() throws {
        var sim = Simulation()
        _ = try unwrap(sim.allocate())
        sim.advance(seconds: 2_000)
        #expect(sim.server.allocationCount == 1)
        // At 0.8 of 600 s: 480, 960, 1440, 1920. The nonce (valid 600 s) has gone stale by the
        // second and fourth, so each of those is sent twice: refused with 438, retried.
        let refreshes = sim.requests(.refresh).map { ($0 - Timestamp.seconds(1_000)).components.seconds }
        #expect(refreshes == [480, 960, 960, 1440, 1920, 1920])
        #expect(sim.client.stats.staleNonces == 2)
        #expect(sim.events.filter { if case .refreshed = $0 { true } else { false } }.count == 4)
        #expect(sim.client.stats.retransmissions == 0)
    }

    @Test("a requested lifetime is sent and the granted one scheduled")
    func requestedLifetime() throws {
        var sim = Simulation { $0.requestedLifetime = .seconds(1_200) }
        _ = try unwrap(sim.allocate())
        #expect(sim.sent.last?.message?.lifetime == 1_200)
        #expect(sim.events == [.allocated(relayed: sim.client.relayedAddress!, mapped: clientAddress, lifetime: .seconds(1_200))])
        sim.advance(seconds: 959)
        #expect(sim.requests(.refresh).isEmpty)
        sim.advance(seconds: 2)
        #expect(sim.requests(.refresh).first == Timestamp.seconds(1_960))
    }

    @Test("without a requested lifetime, refreshes ask for the one the server granted")
    func refreshAsksForGrantedLifetime() throws {
        var sim = Simulation(server: makeServer { $0.defaultLifetime = .seconds(900) })
        _ = try unwrap(sim.allocate())
        sim.advance(seconds: 721)
        let refresh = try #require(sim.sent.last { $0.message?.type.method == .refresh }?.message)
        #expect(refresh.lifetime == 900)
        #expect(sim.requests(.refresh).first == Timestamp.seconds(1_720))
    }

    @Test("deallocate sends Refresh with lifetime 0 and the server frees the allocation")
    func lifetimeZeroFrees() throws {
        var sim = Simulation()
        _ = try unwrap(sim.allocate())
        sim.client.bindChannel(to: peer, now: sim.now)
        sim.pump()
        sim.client.deallocate(now: sim.now)
        sim.pump()
        #expect(sim.sent.last?.message?.lifetime == 0)
        #expect(sim.server.allocationCount == 0)
        #expect(sim.server.sockets.open.isEmpty)
        #expect(sim.events.last == .deallocated)
        #expect(sim.client.state == .deallocated)
        #expect(sim.client.nextDeadline == .distantFuture)
    }
}

@Suite("TURN client: permissions, channels and data (RFC 8656 §9-§12)")
struct TURNClientDataTests {
    @Test("a permission lets Send indications out and Data indications in")
    func sendAndDataIndications() throws {
        var sim = Simulation()
        let relayed = try unwrap(sim.allocate())
        sim.client.createPermission(for: peer.ip, now: sim.now)
        sim.pump()
        #expect(sim.events.last == .permissionCreated(peer.ip))
        #expect(sim.server.permissionCount(of: FiveTuple(client: clientAddress, listener: serverAddress)) == 1)

        let out = try unwrap(sim.client.send(to: peer, payload: [1, 2, 3], now: sim.now))
        #expect(out.bytes.withUnsafeBytes { PacketKind.classify($0) } == .stun)
        sim.client.transmits.append(out)
        sim.pump()
        #expect(sim.atPeer.count == 1)
        #expect(sim.atPeer.first?.from == relayed && sim.atPeer.first?.payload == [1, 2, 3])

        guard case .dataIndication = sim.peerSends([9, 8, 7, 6, 5]) else {
            Issue.record("expected a Data indication")
            return
        }
        #expect(sim.atClient.count == 1)
        #expect(sim.atClient.first?.peer == peer && sim.atClient.first?.payload == [9, 8, 7, 6, 5])
        #expect(sim.client.stats.dataIndicationsIn == 1 && sim.client.stats.sendIndicationsOut == 1)
    }

    @Test("without permission or channel nothing is sent, and it is counted")
    func noPermissionNoSend() throws {
        var sim = Simulation()
        _ = try unwrap(sim.allocate())
        #expect(sim.client.send(to: peer, payload: [1], now: sim.now) == nil)
        #expect(sim.client.stats.noPermissionDropped == 1)
    }

    @Test("a bound channel carries ChannelData both ways, framed in the caller's headroom")
    func channelDataBothWays() throws {
        var sim = Simulation()
        let relayed = try unwrap(sim.allocate())
        let n = try unwrap(sim.client.bindChannel(to: peer, now: sim.now))
        #expect(sim.client.channel(for: peer) == nil, "not before the server confirms")
        sim.pump()
        #expect(ChannelData.rfc8656Range.contains(n))
        #expect(sim.events.suffix(2) == [.permissionCreated(peer.ip), .channelBound(peer: peer, channel: n)])
        #expect(sim.client.channel(for: peer) == n)
        #expect(sim.client.hasPermission(for: peer.ip, now: sim.now))

        // Caller's buffer: 4 bytes of headroom, then the payload.
        var buffer = [UInt8](repeating: 0xEE, count: 4) + Array("hello".utf8)
        let length = buffer.withUnsafeMutableBytes {
            sim.client.frameChannelData(to: peer, buffer: $0, payloadLength: 5)
        }
        #expect(length == 9)
        #expect(Array(buffer[0..<4]) == [UInt8(n >> 8), UInt8(n & 0xFF), 0, 5])
        sim.client.transmits.append(TURNTransmit(destination: serverAddress, bytes: buffer))
        sim.pump()
        #expect(sim.atPeer.last?.from == relayed && sim.atPeer.last?.payload == Array("hello".utf8))

        // `send` uses the channel too.
        let viaSend = try unwrap(sim.client.send(to: peer, payload: [4, 2], now: sim.now))
        #expect(viaSend.bytes == [UInt8(n >> 8), UInt8(n & 0xFF), 0, 2, 4, 2])

        guard case .channelData(_, _, let channel) = sim.peerSends([0xAB, 0xCD, 0xEF]) else {
            Issue.record("expected ChannelData toward the client")
            return
        }
        #expect(channel == n)
        #expect(sim.atClient.last?.peer == peer && sim.atClient.last?.payload == [0xAB, 0xCD, 0xEF])
        #expect(sim.client.stats.channelDataIn == 1)
    }

    @Test("each peer gets its own channel number in 0x4000-0x4FFF, the same one when asked again")
    func channelNumbers() throws {
        var sim = Simulation()
        _ = try unwrap(sim.allocate())
        let a = sim.client.bindChannel(to: peer, now: sim.now)
        let b = sim.client.bindChannel(to: otherPeer, now: sim.now)
        #expect(a == 0x4000 && b == 0x4001)
        #expect(sim.client.bindChannel(to: peer, now: sim.now) == a)
        sim.pump()
        #expect(sim.requests(.channelBind).count == 2)
        #expect(sim.server.channelCount(of: FiveTuple(client: clientAddress, listener: serverAddress)) == 2)
    }

    @Test("the channel range runs out instead of reusing a number")
    func channelRangeExhausted() {
        var client = TURNClient(config: {
            var c = TURNClientConfig(server: serverAddress, credentials: TURNCredentials(username: "u", password: "p"))
            c.channelRange = 0x4000...0x4001
            return c
        }())
        #expect(client.bindChannel(to: peer, now: .zero) == 0x4000)
        #expect(client.bindChannel(to: otherPeer, now: .zero) == 0x4001)
        #expect(client.bindChannel(to: SocketAddress("1.1.1.1:1")!, now: .zero) == nil)
    }

    @Test("permissions (5 min) and channels (10 min) are refreshed ahead of expiry")
    func permissionAndChannelRefresh() throws {
        var sim = Simulation()
        _ = try unwrap(sim.allocate())
        sim.client.bindChannel(to: peer, now: sim.now)
        sim.client.createPermission(for: otherPeer.ip, now: sim.now)
        sim.pump()
        sim.advance(seconds: 1_300)
        let tuple = FiveTuple(client: clientAddress, listener: serverAddress)
        #expect(sim.server.permissionCount(of: tuple) == 2)
        #expect(sim.server.channelCount(of: tuple) == 1)
        // Channel refreshes at 480 and 960 s; permission refreshes every 240 s for both peers.
        #expect(sim.requests(.channelBind).count == 3)
        #expect(sim.requests(.createPermission).count >= 1 + 2 * 5)
        guard case .channelData = sim.peerSends([1]) else {
            Issue.record("channel lost after refreshes")
            return
        }
        guard case .dataIndication = sim.peerSends([2], from: otherPeer) else {
            Issue.record("permission lost after refreshes")
            return
        }
        #expect(sim.atClient.map(\.payload) == [[1], [2]])
    }

    @Test("a refused permission (403, denied peer) is reported and forgotten, the allocation kept")
    func deniedPermission() throws {
        var sim = Simulation()
        _ = try unwrap(sim.allocate())
        let denied = IPAddress("10.0.0.1")!
        sim.client.createPermission(for: denied, now: sim.now)
        sim.pump()
        #expect(sim.events.last == .permissionFailed(denied, .error(code: 403)))
        #expect(sim.client.relayedAddress != nil)
        #expect(!sim.client.hasPermission(for: denied, now: sim.now))
    }
}

@Suite("TURN client: loss detection and hostile input")
struct TURNClientLossTests {
    @Test("an unreachable server fails the allocate after the RFC 8489 schedule: 7 sends, 39.5 s")
    func allocateTimesOut() {
        var sim = Simulation()
        sim.down = true
        sim.client.allocate(now: sim.now)
        sim.pump()
        sim.advance(seconds: 39.4)
        #expect(sim.events.isEmpty)
        sim.advance(seconds: 0.2)
        #expect(sim.events == [.allocationFailed(.timeout)])
        let offsets = sim.requests(.allocate).map { Double(($0 - Timestamp.seconds(1_000)).nanosecondsClamped) / 1e9 }
        #expect(offsets == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
        #expect(RetransmissionSchedule.rfc8489.timeout == .milliseconds(39_500))
    }

    @Test("a server that stops answering is noticed at the refresh: allocationLost after the schedule")
    func serverGoneOnRefresh() throws {
        var sim = Simulation()
        _ = try unwrap(sim.allocate())
        sim.down = true
        sim.advance(seconds: 480 + 39.4)
        #expect(!sim.events.contains(.allocationLost(.timeout)))
        sim.advance(seconds: 0.2)
        #expect(sim.events.last == .allocationLost(.timeout))
        #expect(sim.requests(.refresh).count == 7)
        #expect(sim.client.stats.transactionsTimedOut == 1)
    }

    @Test("a restarted server (437 after its 438) loses the allocation; allocate again reinstalls the channel")
    func serverRestart() throws {
        var sim = Simulation()
        let before = try unwrap(sim.allocate())
        let n = try unwrap(sim.client.bindChannel(to: peer, now: sim.now))
        sim.pump()
        sim.server = makeServer()  // a new process: new nonce secret, no allocations
        sim.advance(seconds: 481)
        #expect(sim.events.last == .allocationLost(.allocationMismatch))
        #expect(sim.client.stats.staleNonces == 1)
        #expect(sim.client.relayedAddress == nil && sim.client.channel(for: peer) == nil)

        sim.client.allocate(now: sim.now)
        sim.pump()
        let after = try #require(sim.client.relayedAddress)
        #expect(sim.server.sockets.open == [after])
        _ = before
        #expect(sim.client.channel(for: peer) == n)
        guard case .channelData(_, _, let c) = sim.peerSends([7]) else {
            Issue.record("channel not reinstalled")
            return
        }
        #expect(c == n && sim.atClient.last?.payload == [7])
    }

    @Test("a 401 to a signed refresh, twice, loses the allocation as unauthenticated")
    func credentialsRevoked() throws {
        var sim = Simulation()
        _ = try unwrap(sim.allocate())
        sim.server.updateCredentials(CredentialStore(realm: realm, users: ["alice": "changed"]))
        sim.advance(seconds: 481)
        #expect(sim.events.last == .allocationLost(.unauthenticated))
        #expect(sim.requests(.refresh).count == 2)
    }

    @Test("forged, unmatched, malformed and foreign datagrams are dropped and counted")
    func hostileInputIsCounted() throws {
        var sim = Simulation()
        sim.client.allocate(now: sim.now)
        // Deliver the unauthenticated Allocate and its 401 by hand, then hold the signed one.
        let first = try unwrap(sim.client.pollTransmit())
        let challenge = first.bytes.withUnsafeBytes {
            sim.server.handleClient($0, from: clientAddress, listener: serverAddress, now: sim.now)
        }
        guard case .reply(let challengeBytes) = challenge else {
            Issue.record("no challenge")
            return
        }
        sim.deliverToClient(challengeBytes)
        let signed = try unwrap(sim.client.pollTransmit())
        let request = try Message.decode(signed.bytes)

        // A success with the right transaction ID but signed with another key.
        let forged = Message(type: MessageType(method: .allocate, messageClass: .successResponse),
                             transactionID: request.transactionID,
                             attributes: [.xorRelayedAddress(SocketAddress("6.6.6.6:6666")!), .lifetime(600)])
        sim.deliverToClient(forged.encode(integrity: MessageIntegrity(key: Array(repeating: 1, count: 16))))
        // The same unsigned.
        sim.deliverToClient(forged.encode())
        // A 437 unsigned: not one of the pre-authentication codes.
        sim.deliverToClient(Message(type: MessageType(method: .allocate, messageClass: .errorResponse),
                                    transactionID: request.transactionID,
                                    attributes: [.errorCode(.allocationMismatch)]).encode())
        // A response to nothing we asked.
        var unmatched = forged
        unmatched.transactionID = .random()
        sim.deliverToClient(unmatched.encode())
        // Garbage, a truncated STUN header, and a datagram from somewhere else.
        sim.deliverToClient([0xFF, 0x00, 0x01])
        sim.deliverToClient(Array(signed.bytes.prefix(24)))
        sim.deliverToClient(forged.encode(), from: SocketAddress("198.51.100.99:3478")!)
        // ChannelData on a channel nobody bound.
        sim.deliverToClient([0x40, 0x07, 0x00, 0x01, 0x55])

        #expect(sim.client.state == .allocating)
        #expect(sim.client.stats.unauthenticatedDropped == 3)
        #expect(sim.client.stats.unmatchedDropped == 1)
        #expect(sim.client.stats.malformedDropped == 2)
        #expect(sim.client.stats.foreignDropped == 1)
        #expect(sim.client.stats.unknownChannelDropped == 1)
        #expect(sim.events.isEmpty)

        // The genuine answer still gets through.
        sim.client.transmits.append(signed)
        sim.pump()
        #expect(sim.client.relayedAddress?.ip == serverAddress.ip)
    }

    @Test("random datagrams from the server address never crash the client and are all counted")
    func randomInput() {
        var rng = SplitMix64(seed: 0x7E57)
        var sim = Simulation()
        _ = sim.allocate()
        let before = sim.client.stats
        for i in 0..<2_000 {
            var bytes = (0..<Int(rng.next() % 80)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if i % 2 == 0, bytes.count >= 20 {  // make half of them look like STUN
                bytes[0] &= 0x01
                bytes.replaceSubrange(4..<8, with: [0x21, 0x12, 0xA4, 0x42])
                let len = UInt16(bytes.count - 20)
                bytes[2] = UInt8(len >> 8)
                bytes[3] = UInt8(len & 0xFF)
            }
            sim.deliverToClient(bytes)
        }
        let s = sim.client.stats
        let dropped = (s.malformedDropped - before.malformedDropped) + (s.unmatchedDropped - before.unmatchedDropped)
            + (s.unexpectedDropped - before.unexpectedDropped) + (s.unknownChannelDropped - before.unknownChannelDropped)
            + (s.unauthenticatedDropped - before.unauthenticatedDropped)
        #expect(dropped == 2_000)
        #expect(sim.client.relayedAddress != nil)
    }
}
