
/// BLAKE2s (RFC 7693), the hash of WireGuard's `Hash`, `Mac` and `Hmac` (whitepaper §5.4).
/// libsodium has only BLAKE2b, so this is a plain-Swift implementation of RFC 7693 §3: the
/// state lives inline (no allocation), the last block is held back until `finalize` because it
/// must be compressed with the final flag, and `wipe()` clears keyed state.
public struct BLAKE2s: Sendable {
    public static let blockSize = 64
    public static let maxOutputLength = 32
    public static let maxKeyLength = 32

    private typealias Words = (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    private typealias Block = (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    /// RFC 7693 §2.6: the SHA-256 initial values.
    private static let iv: Words = (
        0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19
    )

    /// RFC 7693 §2.7: the message word permutations, one row of 16 per round (10 rounds).
    private static let sigma: [Int] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3,
        11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4,
        7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8,
        9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13,
        2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9,
        12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11,
        13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10,
        6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5,
        10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0,
    ]

    private var h: Words
    private var counter: UInt64 = 0
    private var buffer: Block = (0, 0, 0, 0, 0, 0, 0, 0)
    private var buffered = 0
    public let outputLength: Int

    /// Starts a hash of `outputLength` bytes (1-32), keyed when `key` is not empty (at most 32
    /// bytes; RFC 7693 §3.3: the key is padded to a full block and processed first).
    public init(outputLength: Int = 32, key: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        precondition((1...Self.maxOutputLength).contains(outputLength), "BLAKE2s output is 1-32 bytes")
        precondition(key.count <= Self.maxKeyLength, "a BLAKE2s key is at most 32 bytes")
        self.outputLength = outputLength
        h = Self.iv
        // Parameter block word 0: digest length, key length, fanout 1, depth 1 (RFC 7693 §2.5).
        h.0 ^= 0x0101_0000 ^ (UInt32(key.count) << 8) ^ UInt32(outputLength)
        if key.count > 0 {
            withUnsafeMutableBytes(of: &buffer) { $0.copyMemory(from: key) }
            buffered = Self.blockSize
        }
    }

    public init(outputLength: Int = 32, key: [UInt8]) {
        self = key.withUnsafeBytes { BLAKE2s(outputLength: outputLength, key: $0) }
    }

    public mutating func update(_ data: UnsafeRawBufferPointer) {
        guard var input = data.baseAddress, data.count > 0 else { return }
        var remaining = data.count
        while remaining > 0 {
            if buffered == Self.blockSize {
                // Only now is it known that the buffered block is not the last one.
                counter &+= UInt64(Self.blockSize)
                compressBuffer(last: false)
                buffered = 0
            }
            let take = min(Self.blockSize - buffered, remaining)
            let offset = buffered
            withUnsafeMutableBytes(of: &buffer) { b in
                (b.baseAddress! + offset).copyMemory(from: input, byteCount: take)
            }
            buffered += take
            input += take
            remaining -= take
        }
    }

    public mutating func update(_ data: [UInt8]) { data.withUnsafeBytes { update($0) } }

    /// Writes `outputLength` bytes to `out` and wipes the state.
    public mutating func finalize(into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= outputLength, "output buffer too small")
        counter &+= UInt64(buffered)
        let used = buffered
        withUnsafeMutableBytes(of: &buffer) { b in
            for i in used..<Self.blockSize { b[i] = 0 }
        }
        compressBuffer(last: true)
        var digest = h
        withUnsafeMutableBytes(of: &digest) { d in
            // Little-endian words (RFC 7693 §2.4); a no-op on every platform Swift runs on here.
            let words = d.bindMemory(to: UInt32.self)
            for i in 0..<8 { words[i] = words[i].littleEndian }
            out.copyMemory(from: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(d)[0..<outputLength]))
            Sodium.zero(d)
        }
        wipe()
    }

    public mutating func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: outputLength)
        out.withUnsafeMutableBytes { finalize(into: $0) }
        return out
    }

    /// Clears chaining values and buffered input (which may hold a key).
    public mutating func wipe() {
        withUnsafeMutableBytes(of: &h) { Sodium.zero($0) }
        withUnsafeMutableBytes(of: &buffer) { Sodium.zero($0) }
        buffered = 0
        counter = 0
    }

    /// One-shot hash of `data`, optionally keyed.
    public static func hash(_ data: [UInt8], key: [UInt8] = [], outputLength: Int = 32) -> [UInt8] {
        var state = BLAKE2s(outputLength: outputLength, key: key)
        state.update(data)
        return state.finalize()
    }

    // MARK: Compression (RFC 7693 §3.2)

    private mutating func compressBuffer(last: Bool) {
        let t = counter
        var state = h
        withUnsafeBytes(of: &buffer) { block in
            Self.compress(&state, block: block.baseAddress!, counter: t, last: last)
        }
        h = state
    }

    @inline(__always)
    private static func g(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32, _ d: inout UInt32,
                          _ x: UInt32, _ y: UInt32) {
        a = a &+ b &+ x
        d = (d ^ a).rotatedRight(16)
        c = c &+ d
        b = (b ^ c).rotatedRight(12)
        a = a &+ b &+ y
        d = (d ^ a).rotatedRight(8)
        c = c &+ d
        b = (b ^ c).rotatedRight(7)
    }

    private static func compress(_ h: inout Words, block: UnsafeRawPointer, counter: UInt64, last: Bool) {
        var m: Block16 = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &m) { raw in
            let words = raw.bindMemory(to: UInt32.self)
            for i in 0..<16 {
                words[i] = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
            }
        }
        var v0 = h.0, v1 = h.1, v2 = h.2, v3 = h.3, v4 = h.4, v5 = h.5, v6 = h.6, v7 = h.7
        var v8 = iv.0, v9 = iv.1, v10 = iv.2, v11 = iv.3
        var v12 = iv.4 ^ UInt32(truncatingIfNeeded: counter)
        var v13 = iv.5 ^ UInt32(truncatingIfNeeded: counter >> 32)
        var v14 = last ? ~iv.6 : iv.6
        var v15 = iv.7
        withUnsafeBytes(of: &m) { raw in
            let w = raw.bindMemory(to: UInt32.self)
            sigma.withUnsafeBufferPointer { s in
                for round in 0..<10 {
                    let r = 16 * round
                    g(&v0, &v4, &v8, &v12, w[s[r + 0]], w[s[r + 1]])
                    g(&v1, &v5, &v9, &v13, w[s[r + 2]], w[s[r + 3]])
                    g(&v2, &v6, &v10, &v14, w[s[r + 4]], w[s[r + 5]])
                    g(&v3, &v7, &v11, &v15, w[s[r + 6]], w[s[r + 7]])
                    g(&v0, &v5, &v10, &v15, w[s[r + 8]], w[s[r + 9]])
                    g(&v1, &v6, &v11, &v12, w[s[r + 10]], w[s[r + 11]])
                    g(&v2, &v7, &v8, &v13, w[s[r + 12]], w[s[r + 13]])
                    g(&v3, &v4, &v9, &v14, w[s[r + 14]], w[s[r + 15]])
                }
            }
        }
        h.0 ^= v0 ^ v8
        h.1 ^= v1 ^ v9
        h.2 ^= v2 ^ v10
        h.3 ^= v3 ^ v11
        h.4 ^= v4 ^ v12
        h.5 ^= v5 ^ v13
        h.6 ^= v6 ^ v14
        h.7 ^= v7 ^ v15
        withUnsafeMutableBytes(of: &m) { Sodium.zero($0) }
    }

    private typealias Block16 = (
        UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
        UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32
    )
}

extension UInt32 {
    @inline(__always)
    fileprivate func rotatedRight(_ n: UInt32) -> UInt32 { (self >> n) | (self << (32 - n)) }
}
