import FZCrypto

/// The 96-bit transaction ID of RFC 8489 §5, held as two integers so the value needs no heap
/// storage and hashes cheaply (the relay keys retransmission caches by it).
public struct TransactionID: Hashable, Sendable, CustomStringConvertible {
    /// Bytes 0-7 in network order.
    var high: UInt64
    /// Bytes 8-11 in network order.
    var low: UInt32

    init(high: UInt64, low: UInt32) {
        self.high = high
        self.low = low
    }

    /// Builds from exactly 12 bytes; for trusted callers (decoding reads the header directly).
    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 12, "a STUN transaction ID has 12 bytes")
        var h: UInt64 = 0
        var l: UInt32 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt32(b) }
        }
        self.init(high: h, low: l)
    }

    /// Reads 12 bytes at `offset`; the caller guarantees they exist.
    init(reading p: UnsafeRawBufferPointer, at offset: Int) {
        self.init(high: p.be64(at: offset), low: p.be32(at: offset + 8))
    }

    /// The 12 bytes in network order.
    public var bytes: [UInt8] {
        get {
            [UInt8](unsafeUninitializedCapacity: 12) { buf, count in
                if let base = buf.baseAddress { write(to: UnsafeMutableRawPointer(base), at: 0) }
                count = 12
            }
        }
        set { self = TransactionID(bytes: newValue) }
    }

    func write(to p: UnsafeMutableRawPointer, at offset: Int) {
        p.storeBE64(high, at: offset)
        p.storeBE32(low, at: offset + 8)
    }

    /// A fresh ID from libsodium's CSPRNG: RFC 8489 §5 requires IDs to be uniformly random so
    /// off-path attackers cannot forge responses.
    public static func random() -> TransactionID {
        var raw: (UInt64, UInt32) = (0, 0)
        withUnsafeMutableBytes(of: &raw) { SecureRandom.fill(UnsafeMutableRawBufferPointer(rebasing: $0[0..<12])) }
        // The bytes are uniformly random whichever order they are read in.
        return TransactionID(high: raw.0, low: raw.1)
    }

    public var description: String {
        let digits: [Character] = Array("0123456789abcdef")
        var s = ""
        s.reserveCapacity(24)
        for b in bytes {
            s.append(digits[Int(b >> 4)])
            s.append(digits[Int(b & 0xF)])
        }
        return s
    }
}

/// Transaction IDs for the messages a relay originates per packet (Data indications, RFC 8656
/// §11.3), cut 12 bytes at a time from a preallocated block of libsodium CSPRNG output that is
/// refilled when used up. `TransactionID.random()` asks the CSPRNG each time, which on Linux is a
/// `getrandom` system call; here one call serves hundreds of IDs, and taking one never allocates.
/// The IDs are as random as `random()`'s (RFC 8489 §5): each byte comes from the CSPRNG and is
/// handed out once.
///
/// Not thread-safe: one pool belongs to one event loop thread.
public final class TransactionIDPool {
    private let block: UnsafeMutableRawBufferPointer
    private var next: Int

    /// - Parameter byteCount: the block size, rounded down to whole IDs (at least one).
    public init(byteCount: Int = 4096) {
        let usable = max(byteCount - byteCount % 12, 12)
        block = .allocate(byteCount: usable, alignment: 8)
        next = usable  // filled at the first `take`
    }

    deinit { block.deallocate() }

    /// A fresh random transaction ID.
    public func take() -> TransactionID {
        if next + 12 > block.count {
            SecureRandom.fill(block)

            next = 0
        }
        let id = TransactionID(reading: UnsafeRawBufferPointer(block), at: next)
        next += 12
        return id
    }
}
