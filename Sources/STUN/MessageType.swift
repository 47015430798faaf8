/// A STUN method: the 12-bit operation code of RFC 8489 §5, registered in the IANA "STUN Methods"
/// registry (Binding from RFC 8489 §18.2, the TURN methods from RFC 8656 §17).
public struct Method: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 12-bit method number; bits above the twelfth are dropped because the message type
    /// field has no room for them.
    public var rawValue: UInt16

    public init(rawValue: UInt16) { self.rawValue = rawValue & 0x0FFF }

    public static let binding = Method(rawValue: 0x001)
    public static let allocate = Method(rawValue: 0x003)
    public static let refresh = Method(rawValue: 0x004)
    public static let send = Method(rawValue: 0x006)
    public static let data = Method(rawValue: 0x007)
    public static let createPermission = Method(rawValue: 0x008)
    public static let channelBind = Method(rawValue: 0x009)

    public var description: String {
        switch rawValue {
        case 0x001: "Binding"
        case 0x003: "Allocate"
        case 0x004: "Refresh"
        case 0x006: "Send"
        case 0x007: "Data"
        case 0x008: "CreatePermission"
        case 0x009: "ChannelBind"
        default: "Method(0x\(String(rawValue, radix: 16)))"
        }
    }
}

/// The two class bits C1 C0 of the message type (RFC 8489 §5).
public enum MessageClass: Hashable, Sendable {
    case request, indication, successResponse, errorResponse

    var bits: UInt16 {
        switch self {
        case .request: 0b00
        case .indication: 0b01
        case .successResponse: 0b10
        case .errorResponse: 0b11
        }
    }

    init(bits: UInt16) {
        switch bits & 0b11 {
        case 0b00: self = .request
        case 0b01: self = .indication
        case 0b10: self = .successResponse
        default: self = .errorResponse
        }
    }
}

/// The 14-bit message type: a method and a class whose bits are interleaved as
/// `M11..M7 C1 M6..M4 C0 M3..M0` (RFC 8489 §5, Figure 3), kept that way for backward
/// compatibility with RFC 3489's type codes.
public struct MessageType: Hashable, Sendable, CustomStringConvertible {
    public var method: Method
    public var messageClass: MessageClass

    public init(method: Method, messageClass: MessageClass) {
        self.method = method
        self.messageClass = messageClass
    }

    /// Splits a 16-bit type field; nil when either of the top two bits is set, because those
    /// must be zero in every STUN message (RFC 8489 §5) and let STUN be told apart from other
    /// protocols sharing the port (RFC 7983).
    public init?(rawValue: UInt16) {
        guard rawValue & 0xC000 == 0 else { return nil }
        let m = (rawValue & 0x000F) | ((rawValue & 0x00E0) >> 1) | ((rawValue & 0x3E00) >> 2)
        let c = ((rawValue >> 4) & 0b01) | ((rawValue >> 7) & 0b10)
        self.init(method: Method(rawValue: m), messageClass: MessageClass(bits: c))
    }

    public var rawValue: UInt16 {
        let m = method.rawValue
        let c = messageClass.bits
        return (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
    }

    public var description: String {
        let cls: String
        switch messageClass {
        case .request: cls = "request"
        case .indication: cls = "indication"
        case .successResponse: cls = "success response"
        case .errorResponse: cls = "error response"
        }
        return "\(method) \(cls)"
    }
}
