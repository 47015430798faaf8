import CSodium

/// libsodium entry points used by the codec: SHA-256 and HMAC-SHA256 (whose key may have any length,
/// which RFC 8489 long-term keys of 16 or 32 bytes and short-term passwords both need), randomness
/// for transaction IDs, and constant-time comparison so integrity checks leak no timing.
enum Sodium {
    /// `sodium_init` must run once before any other call; a lazily initialised static runs it
    /// exactly once, thread-safely.
    private static let initialized: Bool = sodium_init() >= 0

    static func ensureInitialized() {
        if !initialized { fatalError("libsodium failed to initialise") }
    }

    static func sha256(_ input: UnsafeRawBufferPointer) -> [UInt8] {
        ensureInitialized()
        var empty: UInt8 = 0
        return [UInt8](unsafeUninitializedCapacity: 32) { out, count in
            guard let digest = out.baseAddress else { return }
            if let base = input.baseAddress, input.count > 0 {
                _ = crypto_hash_sha256(digest, base.assumingMemoryBound(to: UInt8.self), UInt64(input.count))
            } else {
                _ = crypto_hash_sha256(digest, &empty, 0)
            }
            count = 32
        }
    }

    static func sha256(_ input: [UInt8]) -> [UInt8] { input.withUnsafeBytes { sha256($0) } }

    /// HMAC-SHA256 over `first` then `second` into the 32 bytes at `out`.
    static func hmacSHA256(key: [UInt8], _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer,
                           into out: UnsafeMutableRawPointer) {
        ensureInitialized()
        var state = crypto_auth_hmacsha256_state()
        var dummy: UInt8 = 0
        key.withUnsafeBufferPointer { k in
            if let base = k.baseAddress {
                _ = crypto_auth_hmacsha256_init(&state, base, k.count)
            } else {
                _ = crypto_auth_hmacsha256_init(&state, &dummy, 0)
            }
        }
        if let base = first.baseAddress, first.count > 0 {
            _ = crypto_auth_hmacsha256_update(&state, base.assumingMemoryBound(to: UInt8.self), UInt64(first.count))
        }
        if let base = second.baseAddress, second.count > 0 {
            _ = crypto_auth_hmacsha256_update(&state, base.assumingMemoryBound(to: UInt8.self), UInt64(second.count))
        }
        _ = crypto_auth_hmacsha256_final(&state, out.assumingMemoryBound(to: UInt8.self))
    }

    /// Constant-time equality of `count` bytes.
    static func equal(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
        ensureInitialized()
        return sodium_memcmp(a, b, count) == 0
    }

    static func randomBytes(into buffer: UnsafeMutableRawBufferPointer) {
        ensureInitialized()
        guard let base = buffer.baseAddress else { return }
        randombytes_buf(base, buffer.count)
    }
}
