import Crypto

/// SHA-256 and HMAC through swift-crypto (BoringSSL on Linux), the one implementation every
/// target uses: STUN's SHA-256 long-term keys, USERHASH and MESSAGE-INTEGRITY-SHA256, the relay's
/// stateless nonces, the portal's token hashes.
public enum SHA256Digest {
    public static func hash(_ bytes: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: bytes)) }
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> [UInt8] { Array(SHA256.hash(data: bytes)) }
}

public enum HMACSHA256 {
    public static let size = 32

    public static func mac(key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    /// HMAC-SHA256 over `first` then `second`, written to the 32 bytes at `out` (STUN computes it
    /// over a rewritten header and the message body without joining them).
    public static func mac(key: [UInt8], _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer,
                           into out: UnsafeMutableRawPointer) {
        var h = HMAC<SHA256>(key: SymmetricKey(data: key))
        h.update(data: first)
        h.update(data: second)
        h.finalize().withUnsafeBytes { out.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }
}

/// HMAC-SHA1: STUN's MESSAGE-INTEGRITY (RFC 8489 §14.5) and TURN REST passwords.
public enum HMACSHA1 {
    public static let size = 20

    public static func mac(key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        Array(HMAC<Insecure.SHA1>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    /// Over `first` then `second`, written to the 20 bytes at `out`.
    public static func mac(key: [UInt8], _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer,
                           into out: UnsafeMutableRawPointer) {
        var h = HMAC<Insecure.SHA1>(key: SymmetricKey(data: key))
        h.update(data: first)
        h.update(data: second)
        h.finalize().withUnsafeBytes { out.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }
}

/// MD5, only because RFC 8489 §9.2.2's default long-term key is MD5(username:realm:password).
public enum MD5Digest {
    public static func hash(_ bytes: [UInt8]) -> [UInt8] { Array(Insecure.MD5.hash(data: bytes)) }
}
