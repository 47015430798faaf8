import FZControl
import FZCrypto

/// TURN REST credentials (draft-uberti-behave-turn-rest, as coturn, eturnal and fz-relay accept
/// them): username `<unix-expiry>:<client id>`, password `base64(HMAC-SHA1(secret, username))`.
/// The relays share the secret, so they check the password without asking the portal.
public struct RelayCredential: Hashable, Sendable, Codable {
    public var username: String
    public var password: String
    public var expiresAt: UnixTime

    public init(username: String, password: String, expiresAt: UnixTime) {
        self.username = username
        self.password = password
        self.expiresAt = expiresAt
    }
}

public enum RelayCredentials {
    /// Credentials for `clientID`, valid for `lifetime` but never beyond the client's session:
    /// a client whose session ends must not keep relaying.
    public static func mint(
        secret: String, clientID: String, now: UnixTime, lifetime: Duration, sessionExpiresAt: UnixTime?
    ) -> RelayCredential {
        var expiry = now + lifetime
        if let end = sessionExpiresAt, end < expiry { expiry = end }
        let (username, password) = TURNRESTCredentials.mint(secret: secret, name: clientID, expiry: expiry.seconds)
        return RelayCredential(username: username, password: password, expiresAt: expiry)
    }

}
