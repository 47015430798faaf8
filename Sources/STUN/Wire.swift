/// Big-endian field access for the codec. STUN is network byte order throughout (RFC 8489 §5);
/// callers check bounds before reading, so these helpers never see an index past the end.
extension UnsafeRawBufferPointer {
    @inline(__always)
    func be16(at i: Int) -> UInt16 { UInt16(self[i]) << 8 | UInt16(self[i + 1]) }

    @inline(__always)
    func be32(at i: Int) -> UInt32 { UInt32(be16(at: i)) << 16 | UInt32(be16(at: i + 2)) }

    @inline(__always)
    func be64(at i: Int) -> UInt64 { UInt64(be32(at: i)) << 32 | UInt64(be32(at: i + 4)) }

    /// The bytes `start..<start+count` re-based to index 0.
    @inline(__always)
    func slice(_ start: Int, _ count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[start..<(start + count)])
    }
}

extension UnsafeMutableRawPointer {
    @inline(__always)
    func storeBE16(_ v: UInt16, at i: Int) { storeBytes(of: v.bigEndian, toByteOffset: i, as: UInt16.self) }

    @inline(__always)
    func storeBE32(_ v: UInt32, at i: Int) { storeBytes(of: v.bigEndian, toByteOffset: i, as: UInt32.self) }

    @inline(__always)
    func storeBE64(_ v: UInt64, at i: Int) { storeBytes(of: v.bigEndian, toByteOffset: i, as: UInt64.self) }

    /// Copies `bytes` to `self + offset`.
    @inline(__always)
    func copy(_ bytes: [UInt8], at offset: Int) {
        bytes.withUnsafeBytes { src in
            UnsafeMutableRawBufferPointer(start: self + offset, count: src.count).copyMemory(from: src)
        }
    }

    /// Copies the UTF-8 of `string` to `self + offset`; returns the byte count.
    @inline(__always)
    @discardableResult
    func copy(utf8 string: String, at offset: Int) -> Int {
        let utf8 = string.utf8
        if let n = utf8.withContiguousStorageIfAvailable({ src -> Int in
            UnsafeMutableRawBufferPointer(start: self + offset, count: src.count)
                .copyMemory(from: UnsafeRawBufferPointer(src))
            return src.count
        }) {
            return n
        }
        var i = offset
        for b in utf8 {
            storeBytes(of: b, toByteOffset: i, as: UInt8.self)
            i += 1
        }
        return i - offset
    }
}

/// Attribute values are padded to a multiple of four bytes (RFC 8489 §14).
@inline(__always)
func padded4(_ n: Int) -> Int { (n + 3) & ~3 }
