import CSodium
import Crypto
import FZCore
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
        guard !secrets.isEmpty, let expiry = Self.restExpiry(username), expiry > unixNow else { return [] }
        return secrets.map { Self.restPassword(secret: $0, username: username) }
    }

    /// The unix expiry a REST username starts with (`1700000000:alice` → 1700000000).
    public static func restExpiry(_ username: String) -> UInt64? {
        guard let colon = username.firstIndex(of: ":") else { return UInt64(username) }
        return UInt64(username[..<colon])
    }

    /// `base64(HMAC-SHA1(secret, username))`, the password a REST user presents.
    public static func restPassword(secret: String, username: String) -> String {
        let mac = HMAC<Insecure.SHA1>.authenticationCode(
            for: Array(username.utf8), using: SymmetricKey(data: Array(secret.utf8)))
        return base64(Array(mac))
    }

    /// Mints REST credentials the way a portal or web app backend does (used by tests and the demo).
    public static func mintREST(secret: String, name: String, expiresAt unix: UInt64) -> (username: String, password: String) {
        let username = "\(unix):\(name)"
        return (username, restPassword(secret: secret, username: username))
    }

    static func base64(_ bytes: [UInt8]) -> String {
        _ = sodiumReady
        let outLen = sodium_base64_encoded_len(bytes.count, sodium_base64_VARIANT_ORIGINAL)
        var out = [CChar](repeating: 0, count: outLen)
        bytes.withUnsafeBufferPointer { b in
            _ = sodium_bin2base64(&out, outLen, b.baseAddress, b.count, sodium_base64_VARIANT_ORIGINAL)
        }
        return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

let sodiumReady: Bool = sodium_init() >= 0
