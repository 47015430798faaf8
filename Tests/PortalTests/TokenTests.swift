import FZControl
import Testing
import FZCrypto
@testable import Portal

@Suite("Tokens")
struct TokenTests {
    @Test("only the SHA-256 of the secret is stored and it matches the presented secret")
    func hashed() throws {
        let issued = try IssuedToken.issue(name: "ci", scope: .admin, subject: nil, now: UnixTime(seconds: 10))
        let presented = issued.secret.presented
        #expect(presented.hasPrefix("fz_") && presented.utf8.count == 46)
        #expect(issued.token.hash.count == 32)
        #expect(TokenSecret(presented: presented)?.hash == issued.token.hash)
        #expect(!issued.token.hash.elementsEqual(issued.secret.bytes))
    }

    @Test("SHA-256 matches a known digest")
    func sha256Vector() {
        #expect(Hex.encode(SHA256Digest.hash((0..<32).map { UInt8($0) }))
            == "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd")
    }

    @Test("two issued secrets differ")
    func random() throws {
        let a = try IssuedToken.issue(name: "a", scope: .relay, subject: nil, now: UnixTime(seconds: 0))
        let b = try IssuedToken.issue(name: "b", scope: .relay, subject: nil, now: UnixTime(seconds: 0))
        #expect(a.secret != b.secret && a.token.id != b.token.id)
    }

    @Test("malformed presented secrets are rejected without a crash")
    func malformed() {
        for bad in ["", "fz_", "Bearer x", "fz_" + String(repeating: "A", count: 42), "fz_" + String(repeating: "!", count: 43)] {
            #expect(TokenSecret(presented: bad) == nil)
        }
    }

    @Test("a revoked or expired token is no longer valid")
    func validity() throws {
        var t = try IssuedToken.issue(name: "gw", scope: .site, subject: "site_1", now: UnixTime(seconds: 0), expiresAt: UnixTime(seconds: 100)).token
        #expect(t.isValid(at: UnixTime(seconds: 99)))
        #expect(!t.isValid(at: UnixTime(seconds: 100)))
        t.expiresAt = nil
        t.revokedAt = UnixTime(seconds: 5)
        #expect(!t.isValid(at: UnixTime(seconds: 6)))
    }

    @Test("site and client tokens need a subject; admin and relay tokens must not have one")
    func subjects() {
        #expect(throws: ValidationError(field: "subject", reason: "required for site tokens")) {
            try IssuedToken.issue(name: "gw", scope: .site, subject: nil, now: UnixTime(seconds: 0))
        }
        #expect(throws: ValidationError.self) { try IssuedToken.issue(name: "x", scope: .admin, subject: "s", now: UnixTime(seconds: 0)) }
        #expect(throws: ValidationError.self) {
            try IssuedToken.issue(name: "x", scope: .relay, subject: nil, now: UnixTime(seconds: 5), expiresAt: UnixTime(seconds: 5))
        }
    }
}
