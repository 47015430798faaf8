import FZControl
import Testing
@testable import Portal

@Suite("TURN REST relay credentials")
struct RelayCredentialsTests {
    @Test("username is expiry:client-id and password is base64 HMAC-SHA1 (checked against Python's hmac)")
    func vector() {
        let c = RelayCredentials.mint(
            secret: "north-secret", clientID: "cli_1", now: UnixTime(seconds: 1_700_000_000), lifetime: .seconds(3600),
            sessionExpiresAt: nil)
        #expect(c.username == "1700003600:cli_1")
        #expect(c.password == "LI8feM1ffA61faKm+8WNyZKneu0=")
        #expect(c.expiresAt == UnixTime(seconds: 1_700_003_600))
    }

    @Test("the expiry never outlives the client's session")
    func boundedBySession() {
        let c = RelayCredentials.mint(
            secret: "s", clientID: "cli_1", now: UnixTime(seconds: 1000), lifetime: .seconds(3600),
            sessionExpiresAt: UnixTime(seconds: 1600))
        #expect(c.username == "1600:cli_1")
        #expect(c.expiresAt == UnixTime(seconds: 1600))
    }
}
