/// A STUN message (RFC 8489 §5): a 20-byte header (type, length, magic cookie, transaction ID)
/// followed by attributes.
///
/// A decoded message keeps the bytes it came from, privately, because MESSAGE-INTEGRITY can
/// only be verified against the exact received bytes (padding included).
public struct Message: Sendable, Equatable, CustomStringConvertible {
    /// The fixed value at bytes 4-7 that tells STUN apart from RFC 3489 and other protocols.
    public static let magicCookie: UInt32 = 0x2112_A442
    public static let headerSize = 20
    /// The length field is 16 bits, so the attributes of one message fit in 65,535 bytes.
    public static let maxBodyLength = 0xFFFF

    public var type: MessageType
    public var transactionID: TransactionID
    /// In wire order. A decoded message lists every attribute it understood, including
    /// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, but not the attributes that
    /// RFC 8489 §14.5-§14.6 says to ignore after an integrity attribute.
    public var attributes: [Attribute]

    /// The bytes a decoded message came from and where its integrity attributes start.
    struct Received: Sendable {
        var bytes: [UInt8]
        var integrityOffset: Int?
        var integritySHA256Offset: Int?
    }

    var received: Received?

    public init(type: MessageType, transactionID: TransactionID, attributes: [Attribute] = []) {
        self.type = type
        self.transactionID = transactionID
        self.attributes = attributes
    }

    /// Compares type, transaction ID and attributes; the received bytes don't take part.
    public static func == (l: Message, r: Message) -> Bool {
        l.type == r.type && l.transactionID == r.transactionID && l.attributes == r.attributes
    }

    /// Comprehension-required attribute types (below 0x8000) this codec does not know, each
    /// listed once in first-seen order: a server answers a request carrying any with 420 and
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1.1).
    public var unknownComprehensionRequired: [UInt16] {
        var types: [UInt16] = []
        for case .unknown(let t, _) in attributes where AttributeType.isComprehensionRequired(t) && !types.contains(t) {
            types.append(t)
        }
        return types
    }

    public var description: String {
        let names = attributes.map { "0x" + String($0.type, radix: 16) }.joined(separator: ",")
        return "\(type) \(transactionID) [\(names)]"
    }
}
