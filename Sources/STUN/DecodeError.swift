/// Why `Message.decode` rejected a datagram.
///
/// `header` tells a server how to react (RFC 8489 §6.3): when the bytes were not a STUN message
/// at all (`header == nil`: wrong leading bits or magic cookie, fewer than 20 bytes, or a length
/// field that is not a multiple of four or disagrees with the datagram) the datagram is dropped
/// silently; when the 20-byte header was sound but the body is not (`header != nil`), a request
/// deserves a 400 Bad Request carrying the same transaction ID.
public struct STUNDecodeError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// Top two bits set or the magic cookie missing (RFC 8489 §6.3).
        case notSTUN
        /// Fewer than 20 bytes, or an attribute (with its padding) running past the end.
        case truncated
        /// The header's length is not a multiple of four or not the number of bytes after the
        /// header (one UDP datagram carries exactly one message).
        case badLength
        /// A known attribute with a malformed value, or FINGERPRINT not last.
        case badAttribute(type: UInt16)
        /// FINGERPRINT present and wrong.
        case badFingerprint
    }

    /// The type and transaction ID of a message whose header was well-formed.
    public struct Header: Hashable, Sendable {
        public var type: MessageType
        public var transactionID: TransactionID

        public init(type: MessageType, transactionID: TransactionID) {
            self.type = type
            self.transactionID = transactionID
        }
    }

    public var kind: Kind
    public var header: Header?

    public init(_ kind: Kind, header: Header? = nil) {
        self.kind = kind
        self.header = header
    }

    public var description: String {
        let what: String
        switch kind {
        case .notSTUN: what = "not a STUN message"
        case .truncated: what = "truncated"
        case .badLength: what = "bad length"
        case .badAttribute(let type): what = "bad attribute 0x\(String(type, radix: 16))"
        case .badFingerprint: what = "bad FINGERPRINT"
        }
        guard let header else { return what }
        return "\(what) in \(header.type) \(header.transactionID)"
    }
}
