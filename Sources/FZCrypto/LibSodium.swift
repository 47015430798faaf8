import CSodium

/// The one place libsodium is initialised. `sodium_init` must run before any other libsodium
/// call (it picks the fastest implementations for this CPU and seeds the CSPRNG); a lazily
/// initialised global runs it exactly once, thread-safely, whichever target calls first.
public enum LibSodium {
    private static let initialized: Bool = sodium_init() >= 0

    /// Call before any direct libsodium call; cheap after the first time (one load and branch).
    @inline(__always)
    public static func ensureInitialized() {
        if !initialized { fatalError("libsodium failed to initialise") }
    }
}

/// Cryptographically secure randomness (libsodium's `randombytes`).
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { fill($0) }
        return out
    }

    /// Fills `buffer` in place: no allocation, for hot paths (transaction IDs, nonces, keys).
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        LibSodium.ensureInitialized()
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        randombytes_buf(base, buffer.count)
    }

    /// A uniformly random integer in `0..<upperBound` (no modulo bias).
    public static func uniform(_ upperBound: UInt32) -> UInt32 {
        LibSodium.ensureInitialized()
        return randombytes_uniform(upperBound)
    }
}

/// Comparisons whose time does not depend on the bytes compared (MACs, nonces, key material).
public enum ConstantTime {
    /// Equality of two byte ranges; a length mismatch is not secret and answers false at once.
    public static func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        LibSodium.ensureInitialized()
        guard a.count == b.count else { return false }
        guard let pa = a.baseAddress, let pb = b.baseAddress, a.count > 0 else { return true }
        return sodium_memcmp(pa, pb, a.count) == 0
    }

    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in equal(pa, pb) } }
    }

    /// True when every byte is zero (e.g. an all-zero X25519 result or key).
    public static func isZero(_ a: UnsafeRawBufferPointer) -> Bool {
        guard let base = a.baseAddress, a.count > 0 else { return true }
        return sodium_is_zero(base.assumingMemoryBound(to: UInt8.self), a.count) == 1
    }

    /// Overwrites `buffer` with zeros in a way the optimiser may not remove (secrets on the stack).
    public static func zero(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        sodium_memzero(base, buffer.count)
    }
}
