import FZControl
import FZCrypto

/// What a token lets its holder do.
public enum TokenScope: String, Hashable, Sendable, Codable, CaseIterable {
    /// The admin REST API.
    case admin
    /// Gateways of one site (`subject` is the site id).
    case site
    /// Clients of one actor (`subject` is the actor id).
    case client
    /// Relays.
    case relay
}

/// A credential as stored: only the SHA-256 of its secret is kept; the secret is shown once, at
/// creation, and cannot be recovered.
public struct Token: Hashable, Sendable, Codable {
    public var id: TokenID
    public var name: String
    public var scope: TokenScope
    /// The site (scope `site`) or actor (scope `client`) the token belongs to.
    public var subject: String?
    public var hash: [UInt8]
    public var createdAt: UnixTime
    public var expiresAt: UnixTime?
    public var revokedAt: UnixTime?

    public init(
        id: TokenID, name: String, scope: TokenScope, subject: String?, hash: [UInt8], createdAt: UnixTime,
        expiresAt: UnixTime? = nil, revokedAt: UnixTime? = nil
    ) {
        self.id = id
        self.name = name
        self.scope = scope
        self.subject = subject
        self.hash = hash
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
    }

    /// Usable at `now`: not revoked and not expired.
    public func isValid(at now: UnixTime) -> Bool {
        if revokedAt != nil { return false }
        if let e = expiresAt, now >= e { return false }
        return true
    }
}

/// A token secret: 32 random bytes, presented as `fz_` + base64url without padding.
public struct TokenSecret: Sendable, Hashable {
    public static let prefix = "fz_"
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32)
        self.bytes = bytes
    }

    public static func generate() -> TokenSecret { TokenSecret(bytes: SecureRandom.bytes(32)) }

    /// Parses the presented form; nil for anything malformed (never a crash, never a lookup).
    public init?(presented text: String) {
        guard text.hasPrefix(Self.prefix), text.utf8.count == 46,
              let raw = Base64.decode(String(text.dropFirst(Self.prefix.count)), .urlSafeNoPadding), raw.count == 32
        else { return nil }
        bytes = raw
    }

    public var presented: String { Self.prefix + Base64.encode(bytes, .urlSafeNoPadding) }

    /// What storage keeps and looks tokens up by: SHA-256 of the raw secret.
    public var hash: [UInt8] { SHA256Digest.hash(bytes) }
}

/// A freshly created token together with its secret, the only time the secret exists.
public struct IssuedToken: Sendable {
    public var token: Token
    public var secret: TokenSecret

    /// Creates a token; validates that scoped tokens name their subject.
    public static func issue(
        name: String, scope: TokenScope, subject: String?, now: UnixTime, expiresAt: UnixTime? = nil
    ) throws(ValidationError) -> IssuedToken {
        let name = try Names.validate(name)
        switch scope {
        case .site, .client:
            guard let s = subject, !s.isEmpty else { throw ValidationError(field: "subject", reason: "required for \(scope.rawValue) tokens") }
        case .admin, .relay:
            guard subject == nil else { throw ValidationError(field: "subject", reason: "not allowed for \(scope.rawValue) tokens") }
        }
        if let e = expiresAt, e <= now { throw ValidationError(field: "expires_at", reason: "must be in the future") }
        let secret = TokenSecret.generate()
        let token = Token(
            id: .random(prefix: "tok"), name: name, scope: scope, subject: subject, hash: secret.hash, createdAt: now,
            expiresAt: expiresAt)
        return IssuedToken(token: token, secret: secret)
    }
}
