import FZCore
import FZCrypto

/// Stateless nonces (RFC 8489 §9.2): a nonce carries its own expiry and a MAC over the expiry
/// and the client's transport address, so the server keeps no state before a client has
/// authenticated and a nonce cannot be replayed from another address.
///
/// Layout: `obMatJos2` (the RFC 8489 §9.2 nonce cookie) + 4 base64 characters of security
/// feature bits + 8 hex digits of expiry (seconds of the server's monotonic clock) + 16 hex
/// digits of HMAC-SHA256(secret, expiry ‖ client).
public struct NonceIssuer: Sendable {
    public static let cookie = "obMatJos2"
    /// Security feature bits (RFC 8489 §18.1): bit 0 "Password algorithms", bit 1 "Username
    /// anonymity" — both offered, as 24 bits 0xC00000 in base64.
    public static let features = "wAAA"

    private let secret: [UInt8]
    public var lifetime: Duration

    public init(secret: [UInt8]? = nil, lifetime: Duration = .seconds(600)) {
        self.secret = secret ?? Self.randomSecret()
        self.lifetime = lifetime
    }

    /// 32 random bytes from libsodium: a secret several servers can share.
    public static func randomSecret() -> [UInt8] {
        SecureRandom.bytes(32)
    }

    public func issue(for client: SocketAddress, now: Timestamp) -> String {
        let expiry = UInt32(truncatingIfNeeded: (now + lifetime).seconds)
        return Self.cookie + Self.features + hex32(expiry) + Hex.encode(mac(expiry: expiry, client: client))
    }

    public enum Verdict: Sendable, Equatable { case valid, stale, invalid }

    /// Whether `nonce` was issued by this server for `client` and is unexpired.
    public func check(_ nonce: String, for client: SocketAddress, now: Timestamp) -> Verdict {
        let u = Array(nonce.utf8)
        let prefix = Self.cookie.utf8.count + Self.features.utf8.count
        guard u.count == prefix + 8 + 16, nonce.hasPrefix(Self.cookie + Self.features),
            let expiry = UInt32(String(decoding: u[prefix..<prefix + 8], as: UTF8.self), radix: 16)
        else { return .invalid }
        let expected = Array(Hex.encode(mac(expiry: expiry, client: client)).utf8)
        let given = Array(u[(prefix + 8)...])
        guard ConstantTime.equal(expected, given) else { return .invalid }
        return UInt64(expiry) >= now.seconds ? .valid : .stale
    }

    private func mac(expiry: UInt32, client: SocketAddress) -> [UInt8] {
        var input = [UInt8]()
        input.reserveCapacity(32)
        withUnsafeBytes(of: expiry.bigEndian) { input.append(contentsOf: $0) }
        switch client.ip {
        case .v4(let a): withUnsafeBytes(of: a.value.bigEndian) { input.append(contentsOf: $0) }
        case .v6(let a): input.append(contentsOf: a.bytes)
        }
        withUnsafeBytes(of: client.port.bigEndian) { input.append(contentsOf: $0) }
        return Array(HMACSHA256.mac(key: secret, input).prefix(8))
    }
}

func hex32(_ v: UInt32) -> String {
    Hex.encode([UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)])
}
