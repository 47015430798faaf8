/// A password algorithm as carried by PASSWORD-ALGORITHM and PASSWORD-ALGORITHMS
/// (RFC 8489 §14.11, §14.12; registry in §18.5). It selects how the long-term key is derived.
public struct PasswordAlgorithm: Hashable, Sendable, CustomStringConvertible {
    public var id: UInt16
    public var parameters: [UInt8]

    public init(id: UInt16, parameters: [UInt8] = []) {
        self.id = id
        self.parameters = parameters
    }

    /// RFC 8489 §18.5: the RFC 5389 key derivation, the default when no algorithm is negotiated.
    public static let md5 = PasswordAlgorithm(id: 0x0001)
    /// RFC 8489 §18.5.
    public static let sha256 = PasswordAlgorithm(id: 0x0002)

    /// Bytes one entry takes inside the attribute value: algorithm, parameter length, and the
    /// parameters padded to four bytes (RFC 8489 §14.11).
    var encodedLength: Int { 4 + padded4(parameters.count) }

    public var description: String {
        switch id {
        case 0x0001: "MD5"
        case 0x0002: "SHA-256"
        default: "PasswordAlgorithm(0x\(String(id, radix: 16)))"
        }
    }
}
