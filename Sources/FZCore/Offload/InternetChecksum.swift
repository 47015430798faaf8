/// The Internet checksum (RFC 1071): the one's-complement sum of 16-bit big-endian words.
///
/// Sums are carried unfolded in a `UInt64` so the pieces of one checksum (pseudo-header, header,
/// payload) can be summed separately and added before a single `fold`: one's-complement addition
/// is associative and commutative, and since 2^16 ≡ 1 (mod 0xFFFF) a wider accumulator folds to the
/// same 16 bits (RFC 1071 §2 (C)). A piece summed on its own must start at an even offset of the
/// checksummed data, because each call pairs bytes from its own first byte.
public enum InternetChecksum {
    /// Adds the 16-bit big-endian words of `bytes` (an odd last byte is padded with a zero byte) to
    /// `initial`, without folding.
    ///
    /// Loads 8 bytes at a time in host order and adds their two 32-bit halves to a 64-bit
    /// accumulator, which leaves no carries to propagate inside the loop (2^32 ≡ 1 mod 0xFFFF too).
    /// Host order only byte-swaps the folded result (RFC 1071 §2 (B)), so one swap at the end fixes it.
    public static func sum(_ bytes: UnsafeRawBufferPointer, initial: UInt64 = 0) -> UInt64 {
        guard var p = bytes.baseAddress else { return initial }
        var remaining = bytes.count
        var acc: UInt64 = 0
        while remaining >= 8 {
            // Each word adds less than 2^33; reducing every 2^28 words keeps `acc` below 2^62.
            let words = min(remaining / 8, 1 << 28)
            var i = 0
            while i < words {
                let w = p.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self)
                acc &+= (w & 0xFFFF_FFFF) &+ (w >> 32)
                i &+= 1
            }
            acc = (acc & 0xFFFF_FFFF) &+ (acc >> 32)
            p += words &* 8
            remaining -= words &* 8
        }
        if remaining >= 4 {
            acc &+= UInt64(p.loadUnaligned(as: UInt32.self))
            p += 4
            remaining -= 4
        }
        if remaining >= 2 {
            acc &+= UInt64(p.loadUnaligned(as: UInt16.self))
            p += 2
            remaining -= 2
        }
        if remaining == 1 {
            // The host-order value of the two bytes [last, 0].
            acc &+= UInt64(UInt16(bigEndian: UInt16(p.load(as: UInt8.self)) << 8))
        }
        return add(initial, UInt64(UInt16(bigEndian: fold(acc))))
    }

    /// Folds `sum` to 16 bits with end-around carries; not complemented. Zero only for a zero sum.
    public static func fold(_ sum: UInt64) -> UInt16 {
        var s = (sum & 0xFFFF_FFFF) + (sum >> 32)
        while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
        return UInt16(truncatingIfNeeded: s)
    }

    /// One's-complement addition of two unfolded sums (2^64 ≡ 1 mod 0xFFFF, so the carry wraps to 1).
    @inline(__always)
    static func add(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (s, overflow) = a.addingReportingOverflow(b)
        return overflow ? s &+ 1 : s
    }

    /// The pseudo-header sum for an upper-layer packet of protocol `proto` and `length` bytes: source
    /// and destination address, protocol and length (RFC 793 §3.1 for IPv4, RFC 8200 §8.1 for IPv6),
    /// with the addresses read from the IP header at the start of `ipPacket`.
    ///
    /// Precondition: `ipPacket` starts with a version 4 or 6 header long enough to hold both addresses.
    public static func pseudoHeaderSum(ipPacket: UnsafeRawBufferPointer, protocol proto: UInt8, length: Int) -> UInt64 {
        precondition(length >= 0, "negative upper-layer length")
        let addresses: Range<Int>
        switch ipPacket.isEmpty ? 0 : ipPacket[0] >> 4 {
        case 4: addresses = 12..<20
        case 6: addresses = 8..<40
        default: preconditionFailure("pseudo-header of a packet that is neither IPv4 nor IPv6")
        }
        precondition(ipPacket.count >= addresses.upperBound, "IP header too short for its addresses")
        // The 32-bit IPv6 length is two words, but as an unfolded value it is the same sum mod 0xFFFF.
        return sum(UnsafeRawBufferPointer(rebasing: ipPacket[addresses]), initial: UInt64(proto) + UInt64(length))
    }

    /// Completes a checksum the kernel left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM` without GSO): the
    /// field at `start + offset` holds the pseudo-header sum, and the one's-complement sum from
    /// `start` to the end of `packet` (that field included), complemented, is the checksum.
    ///
    /// A UDP (or UDP-Lite) result of zero is stored as 0xFFFF, since zero means "no checksum"
    /// (RFC 768, RFC 3828 §3.1; and IPv6 forbids it, RFC 8200 §8.1). The protocol is read from the IP
    /// header; behind IPv6 extension headers it is unknown and the TCP rule (store as computed) applies.
    ///
    /// Returns false, with `packet` unchanged, if the field does not lie inside `packet`.
    public static func completePartialChecksum(_ packet: UnsafeMutableRawBufferPointer, start: Int, offset: Int) -> Bool {
        guard start >= 0, offset >= 0, start < packet.count, offset <= packet.count - start - 2 else { return false }
        var checksum = ~fold(sum(UnsafeRawBufferPointer(rebasing: packet[start...])))
        if checksum == 0 {
            let bytes = UnsafeRawBufferPointer(packet)
            let proto: UInt8? =
                switch bytes[0] >> 4 {
                case 4 where bytes.count >= 20: bytes[9]
                case 6 where bytes.count >= 40: bytes[6]
                default: nil
                }
            if proto == 17 || proto == 136 { checksum = 0xFFFF }
        }
        packet.storeBigEndian(checksum, at: start + offset)
        return true
    }
}

// Big-endian field access for the offload code. Callers check bounds first: these do not.
extension UnsafeRawBufferPointer {
    @inline(__always)
    func bigEndianUInt16(at offset: Int) -> UInt16 {
        UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    func bigEndianUInt32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// True if `self` and `other` hold the same bytes in `range`.
    @inline(__always)
    func sameBytes(as other: UnsafeRawBufferPointer, in range: Range<Int>) -> Bool {
        var i = range.lowerBound
        while i < range.upperBound {
            if self[i] != other[i] { return false }
            i += 1
        }
        return true
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func storeBigEndian(_ value: UInt16, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inline(__always)
    func storeBigEndian(_ value: UInt32, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }
}
