import FZCrypto

/// Anything whose bytes the crypto code can read without copying.
protocol RawBytes {
    func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: RawBytes where Element == UInt8 {
    func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(body)
    }
}

extension UnsafeRawBufferPointer: RawBytes {
    func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try body(self) }
}

/// 32 secret bytes (a private key, chaining key, transport key, pre-shared key or cookie secret) in
/// their own allocation, wiped with `sodium_memzero` when the last reference goes away.
///
/// A class because Swift structs cannot run code when dropped. It is immutable after `init`, so
/// sharing one instance between copies of a `Peer` is safe, which is why `@unchecked Sendable`
/// holds. Allocated once per handshake or session, never per packet.
public final class SecretKey: @unchecked Sendable, RawBytes {
    public static let byteCount = 32
    private let storage: UnsafeMutableRawPointer

    /// Fills the key through `body`, which must write all 32 bytes.
    init(initializingWith body: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        storage = UnsafeMutableRawPointer.allocate(byteCount: Self.byteCount, alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: Self.byteCount)
        do {
            try body(UnsafeMutableRawBufferPointer(start: storage, count: Self.byteCount))
        } catch {
            ConstantTime.zero(UnsafeMutableRawBufferPointer(start: storage, count: Self.byteCount))
            storage.deallocate()
            throw error
        }
    }

    /// Copies exactly 32 bytes.
    convenience init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        self.init { out in _ = out.initializeMemory(as: UInt8.self, from: bytes) }
    }

    convenience init(copying raw: UnsafeRawBufferPointer) {
        precondition(raw.count == Self.byteCount, "a secret key is 32 bytes")
        self.init { out in out.copyMemory(from: raw) }
    }

    /// 32 bytes from libsodium's CSPRNG.
    static func random() -> SecretKey { SecretKey { Sodium.randomBytes($0) } }

    /// All zeros: the whitepaper's `Q = 0^32` when no pre-shared key is configured (§5.2).
    static func zeros() -> SecretKey { SecretKey { _ in } }

    deinit {
        ConstantTime.zero(UnsafeMutableRawBufferPointer(start: storage, count: Self.byteCount))
        storage.deallocate()
    }

    func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage, count: Self.byteCount))
    }

    var pointer: UnsafeRawPointer { UnsafeRawPointer(storage) }

    var isZero: Bool { withRawBytes { Sodium.isZero($0) } }

    /// Constant-time comparison.
    func isEqual(to other: SecretKey) -> Bool {
        withRawBytes { a in other.withRawBytes { b in Sodium.equal(a, b) } }
    }
}

/// A Curve25519 public key: a value type usable as a dictionary key (the device finds a peer by
/// the static key an initiation carries, §5.4.2). Stored inline, so no allocation.
public struct PublicKey: Hashable, Sendable, CustomStringConvertible, RawBytes {
    private var storage: (UInt64, UInt64, UInt64, UInt64)

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        storage = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &storage) { _ = $0.initializeMemory(as: UInt8.self, from: bytes) }
    }

    init(copying raw: UnsafeRawBufferPointer) {
        precondition(raw.count == 32, "a public key is 32 bytes")
        storage = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) }
    }

    /// Parses the base64 form `wg genkey | wg pubkey` prints.
    public init?(base64: String) {
        guard let bytes = Base64.decode(base64), let key = PublicKey(bytes: bytes) else { return nil }
        self = key
    }

    public var bytes: [UInt8] { withRawBytes { Array($0) } }
    public var base64: String { withRawBytes { Base64.encode($0) } }
    public var description: String { base64 }

    func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var copy = storage
        return try withUnsafeBytes(of: &copy) { try body($0) }
    }

    public static func == (l: PublicKey, r: PublicKey) -> Bool {
        l.storage.0 == r.storage.0 && l.storage.1 == r.storage.1 && l.storage.2 == r.storage.2
            && l.storage.3 == r.storage.3
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(storage.0)
        hasher.combine(storage.1)
        hasher.combine(storage.2)
        hasher.combine(storage.3)
    }
}

/// A Curve25519 private key and its public key. The scalar is clamped on creation, as `wg genkey`
/// and wireguard-go do.
public struct PrivateKey: Sendable {
    let secret: SecretKey
    public let publicKey: PublicKey

    init(secret: SecretKey) {
        let clamped = SecretKey { out in
            secret.withRawBytes { out.copyMemory(from: $0) }
            out[0] &= 248
            out[31] = (out[31] & 127) | 64
        }
        self.secret = clamped
        var pub = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &pub) { Sodium.x25519Base($0.baseAddress!, scalar: clamped.pointer) }
        publicKey = withUnsafeBytes(of: &pub) { PublicKey(copying: $0) }
    }

    public init?(bytes: some Collection<UInt8>) {
        guard let s = SecretKey(bytes: bytes) else { return nil }
        self.init(secret: s)
    }

    public init?(base64: String) {
        guard var bytes = Base64.decode(base64) else { return nil }
        defer { bytes.withUnsafeMutableBytes { Sodium.zero($0) } }
        self.init(bytes: bytes)
    }

    /// A fresh key from libsodium's CSPRNG (`DH-Generate`, §5.4).
    public static func generate() -> PrivateKey { PrivateKey(secret: .random()) }

    /// The base64 form, for configuration files. The returned string is not wiped.
    public var base64: String { secret.withRawBytes { Base64.encode($0) } }

    /// `DH(self, public)` (§5.4): nil when the result is all zeros.
    func sharedSecret(with peer: PublicKey) -> SecretKey? {
        var ok = false
        let shared = peer.withRawBytes { p in
            SecretKey { out in ok = Sodium.x25519(out.baseAddress!, scalar: secret.pointer, point: p.baseAddress!) }
        }
        return ok ? shared : nil
    }
}

/// The optional symmetric key mixed into the handshake (`Q`, §5.2).
public struct PresharedKey: Sendable {
    let secret: SecretKey

    public init?(bytes: some Collection<UInt8>) {
        guard let s = SecretKey(bytes: bytes) else { return nil }
        secret = s
    }

    public init?(base64: String) {
        guard var bytes = Base64.decode(base64) else { return nil }
        defer { bytes.withUnsafeMutableBytes { Sodium.zero($0) } }
        self.init(bytes: bytes)
    }

    public static func generate() -> PresharedKey { PresharedKey(secret: .random()) }

    init(secret: SecretKey) { self.secret = secret }
}
