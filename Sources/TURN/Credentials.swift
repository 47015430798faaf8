import FZCore
import FZCrypto
import STUN

/// The long-term credentials a relay accepts (RFC 8489 §9.2): static users and the TURN REST
/// API shared secrets (coturn-compatible: username `expiry:name`, password
/// `base64(HMAC-SHA1(secret, username))`, draft-uberti-behave-turn-rest).
public struct CredentialStore: Sendable {
    /// Static users by name with their password.
    public private(set) var users: [String: String]
    /// REST secrets; several are accepted at once so an operator can rotate without downtime.
    public private(set) var secrets: [String]
    public let realm: String
    /// Static users by USERHASH (RFC 8489 §14.4), so anonymous requests can be answered.
    private var byUserhash: [[UInt8]: String] = [:]

    public init(realm: String, users: [String: String] = [:], secrets: [String] = []) {
        self.realm = realm
        self.users = users
        self.secrets = secrets
        for name in users.keys {
            byUserhash[LongTermCredentials.userhash(username: name, realm: realm)] = name
        }
    }

    public var isEmpty: Bool { users.isEmpty && secrets.isEmpty }

    /// The user a USERHASH stands for (static users only: a REST username cannot be recovered
    /// from its hash, so REST clients must send USERNAME).
    public func username(forUserhash hash: [UInt8]) -> String? { byUserhash[hash] }

    /// Candidate passwords for `username` at unix time `unixNow`: the static password, or one
    /// REST password per secret when the username carries an unexpired `expiry:` prefix.
    public func passwords(for username: String, unixNow: UInt64) -> [String] {
        if let p = users[username] { return [p] }
        guard !secrets.isEmpty, let expiry = TURNRESTCredentials.expiry(of: username), expiry > unixNow else { return [] }
        return secrets.map { TURNRESTCredentials.password(secret: $0, username: username) }
    }
}
