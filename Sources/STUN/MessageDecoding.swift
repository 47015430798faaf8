extension Message {
    /// Decodes exactly one message from `bytes` (one UDP datagram, or one frame cut out of a
    /// stream), strictly per RFC 8489 §5 and §14. Any input yields a message or an error.
    ///
    /// The header is checked before anything is copied, so non-STUN traffic costs no allocation.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(STUNDecodeError) -> Message {
        var message = try parse(bytes).get()
        message.received?.bytes = Array(bytes)
        return message
    }

    public static func decode(_ bytes: [UInt8]) throws(STUNDecodeError) -> Message {
        var message = try bytes.withUnsafeBytes { parse($0) }.get()
        message.received?.bytes = bytes
        return message
    }

    /// The decoder proper. It returns the message with `received.bytes` still empty; the
    /// callers fill them in.
    private static func parse(_ p: UnsafeRawBufferPointer) -> Result<Message, STUNDecodeError> {
        let count = p.count
        // §6.3: the first two bits are zero and bytes 4-7 hold the magic cookie.
        if count >= 1, p[0] & 0xC0 != 0 { return .failure(STUNDecodeError(.notSTUN)) }
        if count >= 8, p.be32(at: 4) != magicCookie { return .failure(STUNDecodeError(.notSTUN)) }
        guard count >= headerSize else { return .failure(STUNDecodeError(.truncated)) }
        // §5: the length counts the bytes after the header and is a multiple of four because
        // every attribute is padded; a datagram carries exactly one message.
        let length = Int(p.be16(at: 2))
        guard length % 4 == 0, length == count - headerSize else { return .failure(STUNDecodeError(.badLength)) }
        guard let type = MessageType(rawValue: p.be16(at: 0)) else { return .failure(STUNDecodeError(.notSTUN)) }
        let transactionID = TransactionID(reading: p, at: 8)
        let header = STUNDecodeError.Header(type: type, transactionID: transactionID)

        var attributes: [Attribute] = []
        var received = Received(bytes: [])
        var fingerprintOffset: Int?
        var offset = headerSize
        while offset < count {
            // The remainder is a non-zero multiple of four, so an attribute header fits.
            let attributeType = p.be16(at: offset)
            let valueLength = Int(p.be16(at: offset + 2))
            guard padded4(valueLength) <= count - offset - 4 else {
                return .failure(STUNDecodeError(.truncated, header: header))
            }
            let start = offset
            offset += 4 + padded4(valueLength)

            // §14.7: FINGERPRINT is the last attribute.
            if fingerprintOffset != nil {
                return .failure(STUNDecodeError(.badAttribute(type: AttributeType.fingerprint), header: header))
            }
            // §14.6: after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT counts; §14.5: after
            // MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT. The rest is ignored.
            if received.integritySHA256Offset != nil, attributeType != AttributeType.fingerprint { continue }
            if received.integrityOffset != nil, attributeType != AttributeType.fingerprint,
                attributeType != AttributeType.messageIntegritySHA256
            {
                continue
            }

            let value = p.slice(start + 4, valueLength)
            guard let attribute = Attribute.decode(type: attributeType, value: value, transactionID: transactionID)
            else {
                return .failure(STUNDecodeError(.badAttribute(type: attributeType), header: header))
            }
            switch attributeType {
            case AttributeType.messageIntegrity: received.integrityOffset = start
            case AttributeType.messageIntegritySHA256: received.integritySHA256Offset = start
            case AttributeType.fingerprint: fingerprintOffset = start
            default: break
            }
            attributes.append(attribute)
        }

        // §14.7: the CRC covers the message up to FINGERPRINT, whose own header the length
        // field already counts because FINGERPRINT is last.
        if let f = fingerprintOffset, Fingerprint.value(p.slice(0, f)) != p.be32(at: f + 4) {
            return .failure(STUNDecodeError(.badFingerprint, header: header))
        }

        var message = Message(type: type, transactionID: transactionID, attributes: attributes)
        message.received = received
        return .success(message)
    }
}
