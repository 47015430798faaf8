import CSodium
import FZCrypto

/// The libsodium primitives WireGuard uses (whitepaper §5.4 "Protocol & Cryptography"):
/// X25519 (`DH`), ChaCha20-Poly1305 IETF (`AEAD`) and XChaCha20-Poly1305 (`XAEAD`), plus the
/// CSPRNG, `sodium_memzero` and the constant-time `sodium_memcmp`.
///
/// Unsafe assumptions, stated once: every pointer passed in addresses at least the byte count
/// the function names (32 for keys and points, 12/24 for nonces); callers check buffer sizes
/// before calling, so nothing here checks them again.
enum Sodium {
    /// libsodium is initialised once for the whole process, in FZCrypto.
    @inline(__always)
    static func ensureInitialized() { LibSodium.ensureInitialized() }

    static func randomBytes(_ buffer: UnsafeMutableRawBufferPointer) { SecureRandom.fill(buffer) }

    /// A uniformly random integer in `0..<upperBound`.
    static func uniform(_ upperBound: UInt32) -> UInt32 { SecureRandom.uniform(upperBound) }

    static func zero(_ buffer: UnsafeMutableRawBufferPointer) { ConstantTime.zero(buffer) }

    /// Constant-time equality of two equally long byte ranges (a length mismatch is not secret).
    static func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool { ConstantTime.equal(a, b) }

    static func isZero(_ a: UnsafeRawBufferPointer) -> Bool { ConstantTime.isZero(a) }

    // MARK: X25519

    /// `DH(private, public)` into `out` (32 bytes). Fails when the shared secret is all zeros, i.e.
    /// the public key is of small order; the whitepaper's DH must then abort the handshake.
    static func x25519(_ out: UnsafeMutableRawPointer, scalar: UnsafeRawPointer, point: UnsafeRawPointer) -> Bool {
        ensureInitialized()
        let q = out.assumingMemoryBound(to: UInt8.self)
        let rc = crypto_scalarmult_curve25519(
            q, scalar.assumingMemoryBound(to: UInt8.self), point.assumingMemoryBound(to: UInt8.self))
        // libsodium already returns -1 for an all-zero result; checking again costs nothing and
        // keeps the rule visible here rather than implied by a library version.
        return rc == 0 && sodium_is_zero(q, 32) == 0
    }

    static func x25519Base(_ out: UnsafeMutableRawPointer, scalar: UnsafeRawPointer) {
        ensureInitialized()
        _ = crypto_scalarmult_curve25519_base(
            out.assumingMemoryBound(to: UInt8.self), scalar.assumingMemoryBound(to: UInt8.self))
    }

    // MARK: ChaCha20-Poly1305 (IETF) — §5.4 AEAD

    static let tagSize = 16

    /// `AEAD(key, counter, plaintext, ad)`: the 96-bit nonce is 32 zero bits followed by the
    /// 64-bit little-endian counter (§5.4). Writes `count + 16` bytes to `out`; `out` may equal
    /// `plaintext` (in place).
    static func seal(key: UnsafeRawPointer, counter: UInt64, plaintext: UnsafeRawPointer?, count: Int,
                     ad: UnsafeRawBufferPointer, out: UnsafeMutableRawPointer) {
        ensureInitialized()
        var nonce = nonce(counter)
        var dummy: UInt8 = 0
        withUnsafeBytes(of: &nonce) { n in
            withUnsafeMutablePointer(to: &dummy) { d in
                let m = plaintext?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(d)
                let a = ad.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(d)
                _ = crypto_aead_chacha20poly1305_ietf_encrypt(
                    out.assumingMemoryBound(to: UInt8.self), nil, m, UInt64(count), a, UInt64(ad.count), nil,
                    n.baseAddress!.assumingMemoryBound(to: UInt8.self), key.assumingMemoryBound(to: UInt8.self))
            }
        }
    }

    /// Verifies and decrypts `count` bytes (ciphertext and tag) into `out` (`count - 16` bytes);
    /// `out` may equal `ciphertext`. Nothing is written unless the tag is valid.
    static func open(key: UnsafeRawPointer, counter: UInt64, ciphertext: UnsafeRawPointer, count: Int,
                     ad: UnsafeRawBufferPointer, out: UnsafeMutableRawPointer) -> Bool {
        ensureInitialized()
        guard count >= tagSize else { return false }
        var nonce = nonce(counter)
        var dummy: UInt8 = 0
        return withUnsafeBytes(of: &nonce) { n in
            withUnsafeMutablePointer(to: &dummy) { d in
                let a = ad.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(d)
                return crypto_aead_chacha20poly1305_ietf_decrypt(
                    out.assumingMemoryBound(to: UInt8.self), nil, nil,
                    ciphertext.assumingMemoryBound(to: UInt8.self), UInt64(count), a, UInt64(ad.count),
                    n.baseAddress!.assumingMemoryBound(to: UInt8.self), key.assumingMemoryBound(to: UInt8.self)) == 0
            }
        }
    }

    /// 4 zero bytes then the counter, little-endian. Three `UInt32`s so the tuple is exactly
    /// 12 bytes with no padding.
    private static func nonce(_ counter: UInt64) -> (UInt32, UInt32, UInt32) {
        (0, UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian)
    }

    // MARK: XChaCha20-Poly1305 — §5.4 XAEAD (cookies)

    static let xNonceSize = 24

    static func xseal(key: UnsafeRawPointer, nonce: UnsafeRawPointer, plaintext: UnsafeRawBufferPointer,
                      ad: UnsafeRawBufferPointer, out: UnsafeMutableRawPointer) {
        ensureInitialized()
        _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
            out.assumingMemoryBound(to: UInt8.self), nil,
            plaintext.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(plaintext.count),
            ad.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(ad.count), nil,
            nonce.assumingMemoryBound(to: UInt8.self), key.assumingMemoryBound(to: UInt8.self))
    }

    static func xopen(key: UnsafeRawPointer, nonce: UnsafeRawPointer, ciphertext: UnsafeRawBufferPointer,
                      ad: UnsafeRawBufferPointer, out: UnsafeMutableRawPointer) -> Bool {
        ensureInitialized()
        guard ciphertext.count >= tagSize else { return false }
        return crypto_aead_xchacha20poly1305_ietf_decrypt(
            out.assumingMemoryBound(to: UInt8.self), nil, nil,
            ciphertext.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(ciphertext.count),
            ad.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(ad.count),
            nonce.assumingMemoryBound(to: UInt8.self), key.assumingMemoryBound(to: UInt8.self)) == 0
    }
}
