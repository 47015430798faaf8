import Foundation
import Testing

@testable import STUN

/// Loads a hex vector from Vectors/: whitespace separates bytes, `#` starts a comment.
func vector(_ name: String) throws -> [UInt8] {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "hex", subdirectory: "Vectors"))
    let text = try String(contentsOf: url, encoding: .utf8)
    var hexDigits = ""
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        let code = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        hexDigits += code.filter { !$0.isWhitespace }
    }
    return try #require(hexBytes(hexDigits))
}

/// Bytes from contiguous hex digits; nil if malformed.
func hexBytes(_ hex: String) -> [UInt8]? {
    let digits = Array(hex.filter { !$0.isWhitespace })
    guard digits.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    for i in stride(from: 0, to: digits.count, by: 2) {
        guard let b = UInt8(String(digits[i...i + 1]), radix: 16) else { return nil }
        out.append(b)
    }
    return out
}

func hexString(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

let sampleTransactionID = TransactionID(bytes: [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae])

/// Builds a message by hand, bypassing the encoder, so tests can produce what it never would.
/// `length` overrides the header's length field.
func rawMessage(type: UInt16 = 0x0001, cookie: UInt32 = 0x2112_A442, transactionID: [UInt8] = sampleTransactionID.bytes,
                attributes: [(UInt16, [UInt8])] = [], padding: UInt8 = 0, length: Int? = nil) -> [UInt8] {
    var body: [UInt8] = []
    for (t, v) in attributes {
        body += be16(t) + be16(UInt16(v.count)) + v
        body += [UInt8](repeating: padding, count: (4 - v.count % 4) % 4)
    }
    return be16(type) + be16(UInt16(length ?? body.count)) + be32(cookie) + transactionID + body
}

func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
func be32(_ v: UInt32) -> [UInt8] { be16(UInt16(v >> 16)) + be16(UInt16(v & 0xFFFF)) }
func be64(_ v: UInt64) -> [UInt8] { be32(UInt32(v >> 32)) + be32(UInt32(v & 0xFFFF_FFFF)) }

/// Decodes, returning the error (or nil if decoding succeeded).
func decodeError(_ bytes: [UInt8]) -> STUNDecodeError? {
    do throws(STUNDecodeError) {
        _ = try Message.decode(bytes)
        return nil
    } catch {
        return error
    }
}

