/// The value of an ERROR-CODE attribute (RFC 8489 §14.8): a code from 300 to 699, carried on the
/// wire as a class (hundreds digit, 3-6) and a number (0-99), plus a UTF-8 reason phrase.
///
/// Equality compares the reason phrase too; compare `code` when matching a peer's error.
public struct ErrorCode: Hashable, Sendable, CustomStringConvertible {
    public var code: Int
    public var reason: String

    /// `code` must be in 300...699 (the only codes the wire format can carry); a nil `reason`
    /// picks the phrase the RFCs recommend.
    public init(_ code: Int, reason: String? = nil) {
        precondition((300...699).contains(code), "STUN error codes are 300...699")
        self.code = code
        self.reason = reason ?? ErrorCode.defaultReason(code)
    }

    /// RFC 8489 §14.8.
    public static let tryAlternate = ErrorCode(300)
    public static let badRequest = ErrorCode(400)
    public static let unauthenticated = ErrorCode(401)
    /// RFC 8656 §19.
    public static let forbidden = ErrorCode(403)
    public static let unknownAttribute = ErrorCode(420)
    public static let allocationMismatch = ErrorCode(437)
    public static let staleNonce = ErrorCode(438)
    public static let addressFamilyNotSupported = ErrorCode(440)
    public static let wrongCredentials = ErrorCode(441)
    public static let unsupportedTransportProtocol = ErrorCode(442)
    public static let peerAddressFamilyMismatch = ErrorCode(443)
    public static let allocationQuotaReached = ErrorCode(486)
    /// RFC 8445 §7.3.1.1: both agents claim the same ICE role; the loser of the tie-breaker switches.
    public static let roleConflict = ErrorCode(487)
    public static let serverError = ErrorCode(500)
    public static let insufficientCapacity = ErrorCode(508)

    /// Reason phrases from RFC 8489 §14.8, RFC 8656 §19, RFC 6062 §6.3 and RFC 8445 §7.3.1.1.
    static func defaultReason(_ code: Int) -> String {
        switch code {
        case 300: "Try Alternate"
        case 400: "Bad Request"
        case 401: "Unauthenticated"
        case 403: "Forbidden"
        case 420: "Unknown Attribute"
        case 437: "Allocation Mismatch"
        case 438: "Stale Nonce"
        case 440: "Address Family not Supported"
        case 441: "Wrong Credentials"
        case 442: "Unsupported Transport Protocol"
        case 443: "Peer Address Family Mismatch"
        case 446: "Connection Already Exists"
        case 447: "Connection Timeout or Failure"
        case 486: "Allocation Quota Reached"
        case 487: "Role Conflict"
        case 500: "Server Error"
        case 508: "Insufficient Capacity"
        default: ""
        }
    }

    /// Class (hundreds) and number (remainder) as the wire format splits them.
    var classAndNumber: (UInt8, UInt8) { (UInt8(code / 100), UInt8(code % 100)) }

    public var description: String { reason.isEmpty ? "\(code)" : "\(code) \(reason)" }
}
