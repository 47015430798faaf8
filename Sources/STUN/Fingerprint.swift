/// FINGERPRINT (RFC 8489 §14.7): the CRC-32 of ISO/IEC 13239 (polynomial 0x04C11DB7, used here
/// in its reflected form 0xEDB88320) over the message before the attribute, XORed with
/// 0x5354554E so a STUN CRC differs from a CRC some other protocol placed at the same spot.
enum Fingerprint {
    static let xorValue: UInt32 = 0x5354_554E

    /// The byte-at-a-time table for the reflected polynomial.
    static let table: [UInt32] = (0..<256).map { (i: UInt32) -> UInt32 in
        var c = i
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// The plain CRC-32 (the check value of "123456789" is 0xCBF43926).
    static func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { crc = t[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        }
        return ~crc
    }

    /// The FINGERPRINT value for the message bytes that precede the attribute, with the header
    /// length already covering the FINGERPRINT attribute.
    static func value(_ bytes: UnsafeRawBufferPointer) -> UInt32 { crc32(bytes) ^ xorValue }
}
