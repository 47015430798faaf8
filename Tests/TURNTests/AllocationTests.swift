import FZCore
import STUN
import Testing

@testable import TURN

@Suite("Allocations (RFC 8656 §7, §8)")
struct AllocationTests {
    @Test("an unauthenticated allocate is challenged with realm, nonce and password algorithms")
    func challenge() {
        var h = Harness()
        let r = h.request(.allocate, [.requestedTransport(17)])!
        #expect(r.code == 401)
        #expect(r.realm == realm)
        #expect(r.nonce?.hasPrefix("obMatJos2") == true)
        #expect(r.passwordAlgorithms == [.sha256, .md5])
        #expect(h.server.allocationCount == 0, "no state before authentication")
    }

    @Test("an authenticated allocate gets a relayed address, lifetime and mapped address, signed")
    func allocate() throws {
        var h = Harness()
        let rReply = h.allocate()
        let r = try #require(rReply)
        #expect(r.isSuccess)
        let relayed = try #require(r.xorRelayedAddresses.first)
        #expect(relayed.ip == relayV4)
        #expect((49152...65535).contains(relayed.port))
        #expect(r.lifetime == 600)
        #expect(r.xorMappedAddress == alice)
        let key = LongTermCredentials.key(username: "alice", realm: realm, password: "secret")
        #expect(r.checkIntegrity(key: key) == .valid(.sha1))
        #expect(h.server.sockets.open == [relayed])
    }

    @Test("a wrong password is answered with 401 and creates nothing")
    func wrongPassword() {
        var h = Harness()
        #expect(h.allocate(password: "nope")?.code == 401)
        #expect(h.server.allocationCount == 0)
        #expect(h.server.sockets.opened.isEmpty)
    }

    @Test("an unknown user is answered with 401")
    func unknownUser() {
        var h = Harness()
        #expect(h.allocate(user: "mallory", password: "x")?.code == 401)
    }

    @Test("a request with integrity but no nonce is a bad request")
    func missingNonce() {
        var h = Harness()
        let m = Message(type: MessageType(method: .allocate, messageClass: .request), transactionID: .random(),
                        attributes: [.requestedTransport(17), .username("alice"), .realm(realm)])
        let key = LongTermCredentials.key(username: "alice", realm: realm, password: "secret")
        #expect(h.reply(h.send(m.encode(integrity: MessageIntegrity(key: key))))?.code == 400)
    }

    @Test("a nonce past its lifetime is answered with 438 and a fresh nonce that works")
    func staleNonce() throws {
        var h = Harness()
        let old = h.nonce()
        h.advance(seconds: 601)
        let rReply = h.authed(.allocate, [.requestedTransport(17)], nonce: old)
        let r = try #require(rReply)
        #expect(r.code == 438)
        let fresh = try #require(r.nonce)
        #expect(fresh != old)
        #expect(h.authed(.allocate, [.requestedTransport(17)], nonce: fresh)?.isSuccess == true)
    }

    @Test("a nonce issued to another client address is not accepted")
    func nonceBoundToAddress() {
        var h = Harness()
        let n = h.nonce(from: SocketAddress("203.0.113.9:1")!)
        #expect(h.authed(.allocate, [.requestedTransport(17)], nonce: n)?.code == 438)
    }

    @Test("a retransmitted allocate gets the same answer and a second allocate gets 437")
    func retransmissionAndMismatch() throws {
        var h = Harness()
        let tid = TransactionID.random()
        let firstReply = h.authed(.allocate, [.requestedTransport(17)], transactionID: tid)
        let first = try #require(firstReply)
        let againReply = h.authed(.allocate, [.requestedTransport(17)], transactionID: tid)
        let again = try #require(againReply)
        #expect(first.xorRelayedAddresses == again.xorRelayedAddresses)
        #expect(h.server.allocationCount == 1)
        #expect(h.allocate()?.code == 437)
    }

    @Test("allocate without REQUESTED-TRANSPORT is a bad request; TCP gets 442")
    func transport() {
        var h = Harness()
        #expect(h.allocate([])?.code == 400)
        #expect(h.allocate([.requestedTransport(6)])?.code == 442)
    }

    @Test("requested lifetimes are clamped between the default and the maximum")
    func lifetimes() throws {
        var h = Harness()
        #expect(h.allocate([.requestedTransport(17), .lifetime(60)])?.lifetime == 600)
        #expect(h.allocate([.requestedTransport(17), .lifetime(1800)], from: SocketAddress("203.0.113.5:2")!)?.lifetime == 1800)
        #expect(h.allocate([.requestedTransport(17), .lifetime(99999)], from: SocketAddress("203.0.113.5:3")!)?.lifetime == 3600)
    }

    @Test("when not refreshed the allocation expires and its socket is closed")
    func expiry() throws {
        var h = Harness()
        let relayedReply = h.allocate()?.xorRelayedAddresses.first
        let relayed = try #require(relayedReply)
        h.advance(seconds: 599)
        #expect(h.server.allocationCount == 1)
        h.advance(seconds: 2)
        #expect(h.server.allocationCount == 0)
        #expect(h.server.sockets.closed == [relayed])
        #expect(h.server.stats.allocationsExpired == 1)
        #expect(h.authed(.refresh)?.code == 437)
    }

    @Test("when refreshed in time the allocation does not expire")
    func refreshedInTime() throws {
        var h = Harness()
        let unusedReply = h.allocate()
        _ = try #require(unusedReply)
        h.advance(seconds: 500)
        #expect(h.authed(.refresh, [.lifetime(600)])?.lifetime == 600)
        h.advance(seconds: 500)
        #expect(h.server.allocationCount == 1)
        h.advance(seconds: 101)
        #expect(h.server.allocationCount == 0)
    }

    @Test("a refresh with lifetime zero deletes the allocation and frees its port")
    func refreshZero() throws {
        var h = Harness()
        let relayedReply = h.allocate()?.xorRelayedAddresses.first
        let relayed = try #require(relayedReply)
        let rReply = h.authed(.refresh, [.lifetime(0)])
        let r = try #require(rReply)
        #expect(r.isSuccess && r.lifetime == 0)
        #expect(h.server.allocationCount == 0)
        #expect(h.server.sockets.closed == [relayed])
        #expect(h.server.allocationCount(forUser: "alice") == 0)
    }

    @Test("a refresh without an allocation gets 437")
    func refreshWithoutAllocation() {
        var h = Harness()
        #expect(h.authed(.refresh)?.code == 437)
    }

    @Test("a refresh by another user of the same 5-tuple gets 441")
    func wrongCredentials() throws {
        var h = Harness()
        let unusedReply = h.allocate()
        _ = try #require(unusedReply)
        #expect(h.authed(.refresh, user: "bob", password: "hunter2")?.code == 441)
    }

    @Test("a refresh asking for a family the allocation lacks gets 443")
    func refreshFamilyMismatch() throws {
        var h = Harness()
        let unusedReply = h.allocate()
        _ = try #require(unusedReply)
        #expect(h.authed(.refresh, [.requestedAddressFamily(.v6)])?.code == 443)
    }

    @Test("an IPv6 allocation is served from the IPv6 relay address")
    func ipv6() throws {
        var h = Harness()
        let rReply = h.allocate([.requestedTransport(17), .requestedAddressFamily(.v6)])
        let r = try #require(rReply)
        #expect(r.xorRelayedAddresses.map(\.ip) == [relayV6])
    }

    @Test("a family the relay does not serve gets 440")
    func familyNotSupported() {
        var h = Harness(dualStack: false)
        #expect(h.allocate([.requestedTransport(17), .requestedAddressFamily(.v6)])?.code == 440)
    }

    @Test("a dual-stack allocation gets one IPv4 and one IPv6 relayed address")
    func dualStack() throws {
        var h = Harness()
        let rReply = h.allocate([.requestedTransport(17), .additionalAddressFamily(.v6)])
        let r = try #require(rReply)
        #expect(r.isSuccess)
        #expect(r.xorRelayedAddresses.map(\.ip) == [relayV4, relayV6])
        #expect(h.server.sockets.open.count == 2)
    }

    @Test("a dual-stack allocation on an IPv4-only relay succeeds partially with ADDRESS-ERROR-CODE 440")
    func dualStackPartial() throws {
        var h = Harness(dualStack: false)
        let rReply = h.allocate([.requestedTransport(17), .additionalAddressFamily(.v6)])
        let r = try #require(rReply)
        #expect(r.isSuccess)
        #expect(r.xorRelayedAddresses.map(\.ip) == [relayV4])
        #expect(r.attributes.contains(.addressErrorCode(family: .v6, .addressFamilyNotSupported)))
    }

    @Test("conflicting family attributes are bad requests")
    func familyConflicts() {
        var h = Harness()
        #expect(h.allocate([.requestedTransport(17), .requestedAddressFamily(.v4), .additionalAddressFamily(.v6)])?.code == 400)
        #expect(h.allocate([.requestedTransport(17), .additionalAddressFamily(.v4)])?.code == 400)
        #expect(h.allocate([.requestedTransport(17), .evenPort(reserve: true), .additionalAddressFamily(.v6)])?.code == 400)
        #expect(h.allocate([.requestedTransport(17), .reservationToken(1), .evenPort(reserve: false)])?.code == 400)
    }

    @Test("EVEN-PORT gives an even port; with R the next port is reserved for the returned token")
    func evenPortReservation() throws {
        var h = Harness()
        let rReply = h.allocate([.requestedTransport(17), .evenPort(reserve: true)])
        let r = try #require(rReply)
        let relayed = try #require(r.xorRelayedAddresses.first)
        #expect(relayed.port % 2 == 0)
        let token = try #require(r.reservationToken)
        #expect(h.server.reservationCount == 1)
        let bob = SocketAddress("203.0.113.6:41000")!
        let secondReply = h.allocate([.requestedTransport(17), .reservationToken(token)], from: bob)
        let second = try #require(secondReply)
        #expect(second.xorRelayedAddresses.first?.port == relayed.port + 1)
        #expect(h.server.reservationCount == 0)
        // A token works once.
        let carol = SocketAddress("203.0.113.7:42000")!
        #expect(h.allocate([.requestedTransport(17), .reservationToken(token)], from: carol)?.code == 508)
    }

    @Test("an unused reservation expires after 30 seconds and its socket is closed")
    func reservationExpiry() throws {
        var h = Harness()
        let rReply = h.allocate([.requestedTransport(17), .evenPort(reserve: true)])
        let r = try #require(rReply)
        let token = try #require(r.reservationToken)
        h.advance(seconds: 31)
        #expect(h.server.reservationCount == 0)
        #expect(h.server.sockets.closed.count == 1)
        let bob = SocketAddress("203.0.113.6:41000")!
        #expect(h.allocate([.requestedTransport(17), .reservationToken(token)], from: bob)?.code == 508)
    }

    @Test("EVEN-PORT without R gives an even port and no token")
    func evenPortNoReserve() throws {
        var h = Harness()
        let rReply = h.allocate([.requestedTransport(17), .evenPort(reserve: false)])
        let r = try #require(rReply)
        #expect(r.xorRelayedAddresses.first!.port % 2 == 0)
        #expect(r.reservationToken == nil)
    }

    @Test("a port another process holds is skipped")
    func bindFailureRetries() throws {
        var h = Harness(config: { $0.portRange = 50000...50001 })
        h.server.sockets.refuse = [50000]
        let rReply = h.allocate()
        let r = try #require(rReply)
        #expect(r.xorRelayedAddresses.first?.port == 50001)
    }

    @Test("an exhausted port range gets 508")
    func insufficientCapacity() throws {
        var h = Harness(config: { $0.portRange = 50000...50000 })
        let unusedReply = h.allocate()
        _ = try #require(unusedReply)
        #expect(h.allocate(from: SocketAddress("203.0.113.5:2")!)?.code == 508)
    }

    @Test("a user over their quota gets 486 until one allocation is released")
    func userQuota() throws {
        var h = Harness(config: { $0.userQuota = 2 })
        let a = SocketAddress("203.0.113.5:1")!, b = SocketAddress("203.0.113.5:2")!, c = SocketAddress("203.0.113.5:3")!
        #expect(h.allocate(from: a)?.isSuccess == true)
        #expect(h.allocate(from: b)?.isSuccess == true)
        #expect(h.allocate(from: c)?.code == 486)
        #expect(h.allocate(user: "bob", password: "hunter2", from: c)?.isSuccess == true, "quota is per user")
        #expect(h.authed(.refresh, [.lifetime(0)], from: a)?.isSuccess == true)
        #expect(h.allocate(from: SocketAddress("203.0.113.5:4")!)?.isSuccess == true)
    }

    @Test("a shared ledger that refuses admission (quota across threads) gets 486 and nothing is opened")
    func ledgerRefuses() {
        var h = Harness()
        h.server.sockets.refuseAdmission = true
        #expect(h.allocate()?.code == 486)
        #expect(h.server.sockets.opened.isEmpty)
    }

    @Test("the ledger hears of every allocation that ends, and of admissions that failed later")
    func ledgerBookkeeping() throws {
        var h = Harness(config: { $0.portRange = 50000...50000 })
        let tuple = FiveTuple(client: alice, listener: listener)
        let first = h.allocate()
        #expect(first?.isSuccess == true)
        #expect(h.server.sockets.admitted == [tuple])
        let other = SocketAddress("203.0.113.5:2")!
        #expect(h.allocate(from: other)?.code == 508)
        #expect(h.server.sockets.ended == [FiveTuple(client: other, listener: listener)], "admitted, then no port")
        _ = h.authed(.refresh, [.lifetime(0)])
        #expect(h.server.sockets.ended.last == tuple)
    }

    @Test("an unknown comprehension-required attribute gets 420 listing it")
    func unknownAttribute() throws {
        var h = Harness()
        let rReply = h.allocate([.requestedTransport(17), .unknown(type: 0x0077, value: [1, 2, 3, 4])])
        let r = try #require(rReply)
        #expect(r.code == 420)
        #expect(r.attributes.contains(.unknownAttributes([0x0077])))
    }

    @Test("an unknown comprehension-optional attribute is ignored")
    func unknownOptional() {
        var h = Harness()
        #expect(h.allocate([.requestedTransport(17), .unknown(type: 0xC077, value: [1, 2, 3, 4])])?.isSuccess == true)
    }

    @Test("DONT-FRAGMENT is accepted on UDP allocations")
    func dontFragment() {
        var h = Harness()
        #expect(h.allocate([.requestedTransport(17), .dontFragment])?.isSuccess == true)
    }

    @Test("an unknown request method is a bad request")
    func unknownMethod() {
        var h = Harness()
        #expect(h.request(Method(rawValue: 0x0FF))?.code == 400)
    }

    @Test("a response answers with FINGERPRINT when the request carried one")
    func fingerprint() throws {
        var h = Harness()
        let m = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: .random())
        guard case .reply(let bytes) = h.send(m.encode(fingerprint: true)) else { Issue.record("no reply"); return }
        let r = try Message.decode(bytes)
        #expect(r.attributes.contains { if case .fingerprint = $0 { true } else { false } })
    }

    @Test("a binding request gets the client's reflexive address without authentication")
    func binding() throws {
        var h = Harness()
        let rReply = h.request(.binding)
        let r = try #require(rReply)
        #expect(r.isSuccess)
        #expect(r.xorMappedAddress == alice)
    }

    @Test("garbage is dropped and counted, a malformed request gets 400")
    func malformed() {
        var h = Harness()
        #expect(h.send([0xFF, 0x00, 0x01]) == .none)
        #expect(h.server.stats.malformedDropped == 1)
        // A valid header whose attribute overruns the body.
        var bad = Message(type: MessageType(method: .allocate, messageClass: .request), transactionID: .random()).encode()
        bad[3] = 8
        bad += [0x00, 0x19, 0x00, 0x08, 17, 0, 0, 0]
        #expect(h.reply(h.send(bad))?.code == 400)
        #expect(h.server.stats.malformedDropped == 2)
    }

    @Test("unauthenticated replies to one source are rate-limited; other sources are not affected")
    func rateLimit() {
        var h = Harness()
        var answered = 0
        for _ in 0..<100 where h.request(.allocate, [.requestedTransport(17)]) != nil { answered += 1 }
        #expect(answered == 20)
        #expect(h.server.stats.rateLimited == 80)
        #expect(h.request(.allocate, [.requestedTransport(17)], from: SocketAddress("203.0.113.99:1")!)?.code == 401)
        h.advance(seconds: 1)
        var later = 0
        for _ in 0..<100 where h.request(.allocate, [.requestedTransport(17)]) != nil { later += 1 }
        #expect(later == 10, "refills at 10 per second")
    }
}
