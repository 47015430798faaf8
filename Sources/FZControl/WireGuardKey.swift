import FZCrypto

/// A Curve25519 public key in WireGuard's base64 form (44 characters, 32 bytes).
public struct WireGuardKey: Hashable, Sendable, Codable, CustomStringConvertible {
    public let base64: String

    public init(base64 text: String) throws(ValidationError) {
        guard let bytes = Base64.decode(text), bytes.count == 32 else {
            throw ValidationError(field: "public_key", reason: "not a base64 WireGuard key (32 bytes)")
        }
        // The all-zero point is no key: a handshake with it yields an all-zero shared secret.
        guard bytes.contains(where: { $0 != 0 }) else { throw ValidationError(field: "public_key", reason: "the all-zero key is not a key") }
        base64 = Base64.encode(bytes)
    }

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32)
        base64 = Base64.encode(bytes)
    }

    public var description: String { base64 }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(base64: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.reason))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(base64)
    }
}
