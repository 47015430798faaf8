import FZCore
import FZCrypto
import STUN
import Testing

@testable import TURN

@Suite("Long-term credentials (RFC 8489 §9.2) and the TURN REST API")
struct CredentialTests {
    @Test("a REST username with an unexpired timestamp authenticates with the HMAC password")
    func rest() {
        var h = Harness()
        let (u, p) = TURNRESTCredentials.mint(secret: "rest-secret", name: "web-user", expiry: 1_800_000_000 + 3600)
        #expect(h.allocate(user: u, password: p)?.isSuccess == true)
    }

    @Test("an expired REST username is refused")
    func restExpired() {
        var h = Harness()
        let (u, p) = TURNRESTCredentials.mint(secret: "rest-secret", name: "web-user", expiry: 1_800_000_000 + 10)
        h.advance(seconds: 11)
        #expect(h.allocate(user: u, password: p)?.code == 401)
    }

    @Test("a REST password made with another secret is refused, and a rotated-in secret works")
    func restSecrets() {
        var h = Harness()
        let (u, p) = TURNRESTCredentials.mint(secret: "other", name: "x", expiry: 1_900_000_000)
        #expect(h.allocate(user: u, password: p)?.code == 401)
        h.server.updateCredentials(CredentialStore(realm: realm, users: [:], secrets: ["rest-secret", "other"]))
        #expect(h.allocate(user: u, password: p)?.isSuccess == true)
    }

    @Test("a client choosing SHA-256 from PASSWORD-ALGORITHMS authenticates with MESSAGE-INTEGRITY-SHA256")
    func sha256Upgrade() throws {
        var h = Harness()
        let nonce = h.nonce()
        let m = Message(
            type: MessageType(method: .allocate, messageClass: .request), transactionID: .random(),
            attributes: [.requestedTransport(17), .username("alice"), .realm(realm), .nonce(nonce),
                         .passwordAlgorithms([.sha256, .md5]), .passwordAlgorithm(.sha256)])
        let key = LongTermCredentials.key(username: "alice", realm: realm, password: "secret", algorithm: .sha256)
        let rReply = h.reply(h.send(m.encode(integrity: MessageIntegrity(key: key, algorithm: .sha256))))
        let r = try #require(rReply)
        #expect(r.isSuccess)
        #expect(r.checkIntegrity(key: key) == .valid(.sha256))
    }

    @Test("a password algorithm list that differs from the one offered is a bad request (downgrade protection)")
    func downgrade() throws {
        var h = Harness()
        let nonce = h.nonce()
        let m = Message(
            type: MessageType(method: .allocate, messageClass: .request), transactionID: .random(),
            attributes: [.requestedTransport(17), .username("alice"), .realm(realm), .nonce(nonce),
                         .passwordAlgorithms([.md5]), .passwordAlgorithm(.md5)])
        let key = LongTermCredentials.key(username: "alice", realm: realm, password: "secret")
        #expect(h.reply(h.send(m.encode(integrity: MessageIntegrity(key: key))))?.code == 400)
    }

    @Test("an anonymous request with USERHASH instead of USERNAME authenticates a static user")
    func userhash() throws {
        var h = Harness()
        let nonce = h.nonce()
        let m = Message(
            type: MessageType(method: .allocate, messageClass: .request), transactionID: .random(),
            attributes: [.requestedTransport(17), .userhash(LongTermCredentials.userhash(username: "alice", realm: realm)),
                         .realm(realm), .nonce(nonce), .passwordAlgorithms([.sha256, .md5]), .passwordAlgorithm(.sha256)])
        let key = LongTermCredentials.key(username: "alice", realm: realm, password: "secret", algorithm: .sha256)
        let rReply = h.reply(h.send(m.encode(integrity: MessageIntegrity(key: key, algorithm: .sha256))))
        let r = try #require(rReply)
        #expect(r.isSuccess)
        #expect(h.server.allocationCount(forUser: "alice") == 1)
    }

    @Test("a reload that removes a user refuses that user's next refresh but keeps the allocation until then")
    func reloadUsers() {
        var h = Harness()
        _ = h.allocate()
        h.server.updateCredentials(CredentialStore(realm: realm, users: ["bob": "hunter2"]))
        #expect(h.server.allocationCount == 1)
        #expect(h.authed(.refresh)?.code == 401)
    }

    @Test("a realm other than the server's is refused")
    func wrongRealm() {
        var h = Harness()
        let nonce = h.nonce()
        let m = Message(
            type: MessageType(method: .allocate, messageClass: .request), transactionID: .random(),
            attributes: [.requestedTransport(17), .username("alice"), .realm("other"), .nonce(nonce)])
        let key = LongTermCredentials.key(username: "alice", realm: "other", password: "secret")
        #expect(h.reply(h.send(m.encode(integrity: MessageIntegrity(key: key))))?.code == 401)
    }
}
