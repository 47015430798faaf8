import CSodium

/// Base64 through libsodium, constant-time and strict: `original` (RFC 4648 §4 with padding: TURN
/// REST passwords, WireGuard keys) and `urlSafeNoPadding` (§5 without padding: token secrets,
/// which travel in headers and URLs).
public enum Base64 {
    public enum Variant: Sendable {
        case original, urlSafeNoPadding

        var sodium: Int32 {
            switch self {
            case .original: sodium_base64_VARIANT_ORIGINAL
            case .urlSafeNoPadding: sodium_base64_VARIANT_URLSAFE_NO_PADDING
            }
        }
    }

    public static func encode(_ bytes: [UInt8], _ variant: Variant = .original) -> String {
        bytes.withUnsafeBytes { encode($0, variant) }
    }

    public static func encode(_ bytes: UnsafeRawBufferPointer, _ variant: Variant = .original) -> String {
        LibSodium.ensureInitialized()
        let length = sodium_base64_encoded_len(bytes.count, variant.sodium)  // includes the NUL
        var out = [UInt8](repeating: 0, count: length)
        var empty: UInt8 = 0
        out.withUnsafeMutableBufferPointer { o in
            o.withMemoryRebound(to: CChar.self) { chars in
                let input = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(&empty)
                _ = sodium_bin2base64(chars.baseAddress!, length, input, bytes.count, variant.sodium)
            }
        }
        return String(decoding: out.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// nil for anything that is not exactly valid base64 of this variant (no whitespace, no
    /// missing or extra padding, no trailing bits set).
    public static func decode(_ text: String, _ variant: Variant = .original) -> [UInt8]? {
        LibSodium.ensureInitialized()
        let input = Array(text.utf8)
        guard !input.isEmpty else { return [] }
        var out = [UInt8](repeating: 0, count: input.count * 3 / 4 + 3)
        var written = 0
        // With a NULL end pointer libsodium fails (-1) on any character it cannot use, on bad
        // padding and on non-zero trailing bits: strict, as keys and passwords must be.
        let rc = input.withUnsafeBufferPointer { inp in
            inp.withMemoryRebound(to: CChar.self) { chars in
                sodium_base642bin(&out, out.count, chars.baseAddress, chars.count, nil, &written, nil, variant.sodium)
            }
        }
        guard rc == 0 else { return nil }
        return Array(out.prefix(written))
    }
}

/// Lower-case hexadecimal (ids, ICE credentials, nonces).
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Either case; nil for an odd length or any non-hex character.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let h = nibble(chars[i]), let l = nibble(chars[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        return out
    }
}
