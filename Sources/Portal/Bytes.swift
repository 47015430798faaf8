import CSodium

/// libsodium must be initialised once before its random generator is used.
let sodiumReady: Bool = sodium_init() >= 0

/// Cryptographically secure random bytes (libsodium `randombytes_buf`).
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        precondition(sodiumReady, "libsodium failed to initialise")
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) }
        return out
    }
}

/// Lower-case hexadecimal.
public enum Hex {
    public static func encode(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

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

/// Base64 through libsodium: `original` (with padding, for TURN REST passwords and WireGuard
/// keys) and `urlSafeNoPadding` (for token secrets, which travel in headers).
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
        let outLen = sodium_base64_encoded_len(bytes.count, variant.sodium)
        var out = [CChar](repeating: 0, count: outLen)
        bytes.withUnsafeBufferPointer { b in
            _ = sodium_bin2base64(&out, outLen, b.baseAddress, b.count, variant.sodium)
        }
        return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Strict decoding: nil for anything that is not exactly valid base64 of this variant.
    public static func decode(_ text: String, _ variant: Variant = .original) -> [UInt8]? {
        let input = Array(text.utf8)
        var out = [UInt8](repeating: 0, count: input.count * 3 / 4 + 3)
        var written = 0
        let rc = input.withUnsafeBufferPointer { inp in
            inp.withMemoryRebound(to: CChar.self) { chars in
                sodium_base642bin(&out, out.count, chars.baseAddress, chars.count, nil, &written, nil, variant.sodium)
            }
        }
        guard rc == 0 else { return nil }
        return Array(out.prefix(written))
    }
}

/// SHA-256 (libsodium `crypto_hash_sha256`).
public enum SHA256Digest {
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(crypto_hash_sha256_BYTES))
        bytes.withUnsafeBufferPointer { b in
            _ = crypto_hash_sha256(&out, b.baseAddress, UInt64(b.count))
        }
        return out
    }
}
