import FZCrypto

/// The HMAC behind a message-integrity attribute.
public enum IntegrityAlgorithm: Hashable, Sendable {
    /// MESSAGE-INTEGRITY: HMAC-SHA1, 20 bytes (RFC 8489 §14.5).
    case sha1
    /// MESSAGE-INTEGRITY-SHA256: HMAC-SHA256, sent untruncated as 32 bytes (RFC 8489 §14.6).
    case sha256

    var attributeType: UInt16 {
        switch self {
        case .sha1: AttributeType.messageIntegrity
        case .sha256: AttributeType.messageIntegritySHA256
        }
    }

    var macLength: Int {
        switch self {
        case .sha1: 20
        case .sha256: 32
        }
    }
}

/// How to sign an outgoing message. `key` is the short-term password after OpaqueString
/// (RFC 8489 §9.1.1) or the long-term key from `LongTermCredentials.key` (§9.2.2).
public struct MessageIntegrity: Sendable {
    public var key: [UInt8]
    public var algorithm: IntegrityAlgorithm

    public init(key: [UInt8], algorithm: IntegrityAlgorithm = .sha1) {
        self.key = key
        self.algorithm = algorithm
    }
}

/// The outcome of `Message.checkIntegrity(key:)`.
public enum IntegrityCheck: Hashable, Sendable {
    /// No integrity attribute (or a message that was built, not decoded).
    case absent
    /// The attribute verified with this algorithm.
    case valid(IntegrityAlgorithm)
    /// The attribute is present and does not match the key.
    case invalid
}

enum HMACComputer {
    /// The HMAC of `header` then `body` into `out` (20 or 32 bytes). The header is passed apart
    /// because its length field must be rewritten to end after the integrity attribute
    /// (RFC 8489 §14.5, §14.6).
    static func mac(_ algorithm: IntegrityAlgorithm, key: [UInt8], header: UnsafeRawBufferPointer,
                    body: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) {
        switch algorithm {
        case .sha1:
            HMACSHA1.mac(key: key, header, body, into: out)

        case .sha256:
            HMACSHA256.mac(key: key, header, body, into: out)
        }
    }
}

extension Message {
    /// Verifies MESSAGE-INTEGRITY-SHA256 when present, else MESSAGE-INTEGRITY, over the bytes
    /// this message was decoded from: the HMAC covers everything before the attribute with the
    /// header length rewritten to end just after it (RFC 8489 §14.5, §14.6), and is compared in
    /// constant time. A truncated MESSAGE-INTEGRITY-SHA256 is compared on its length.
    ///
    /// The check concerns the received bytes, whatever was changed in `self` since; `.absent`
    /// for messages that were built rather than decoded, or that carry neither attribute.
    public func checkIntegrity(key: [UInt8]) -> IntegrityCheck {
        guard let received else { return .absent }
        let algorithm: IntegrityAlgorithm
        let offset: Int
        if let o = received.integritySHA256Offset {
            (algorithm, offset) = (.sha256, o)
        } else if let o = received.integrityOffset {
            (algorithm, offset) = (.sha1, o)
        } else {
            return .absent
        }
        let valid = received.bytes.withUnsafeBytes { p -> Bool in
            // Decoding checked that the attribute and its value lie inside the message.
            let length = Int(p.be16(at: offset + 2))
            return withUnsafeTemporaryAllocation(byteCount: Message.headerSize + 32, alignment: 8) { scratch in
                guard let base = scratch.baseAddress, let src = p.baseAddress else { return false }
                base.copyMemory(from: src, byteCount: Message.headerSize)
                base.storeBE16(UInt16(truncatingIfNeeded: offset + 4 + length - Message.headerSize), at: 2)
                let out = base + Message.headerSize
                HMACComputer.mac(algorithm, key: key,
                                 header: UnsafeRawBufferPointer(start: base, count: Message.headerSize),
                                 body: p.slice(Message.headerSize, offset - Message.headerSize), into: out)
                return ConstantTime.equal(
                    UnsafeRawBufferPointer(start: out, count: length), UnsafeRawBufferPointer(start: src + offset + 4, count: length))
            }
        }
        return valid ? .valid(algorithm) : .invalid
    }
}
