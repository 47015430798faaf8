extension Message {
    /// The encoded size for these options, or nil when the attributes exceed the 65,535 bytes a
    /// length field can express (a Data indication around a 65,527-byte IPv6 datagram would).
    public func encodedSize(integrity: MessageIntegrity? = nil, fingerprint: Bool = false) -> Int? {
        var body = 0
        for attribute in attributes where !attribute.isTrailer {
            body += 4 + padded4(attribute.valueLength)
            if body > Message.maxBodyLength { return nil }
        }
        if let integrity { body += 4 + integrity.algorithm.macLength }
        if fingerprint { body += 8 }
        return body <= Message.maxBodyLength ? Message.headerSize + body : nil
    }

    /// Encodes the message, then appends MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 when
    /// `integrity` is given and FINGERPRINT when asked, in that order (RFC 8489 §14.5-§14.7).
    /// Integrity and fingerprint attributes inside `attributes` (say, from a decoded message)
    /// are left out: they would be stale.
    ///
    /// Returns an empty array when the attributes exceed what a STUN length field can express:
    /// sizes can come from the network (a peer's datagram in a Data indication), so this must not
    /// trap. Check `encodedSize` first, or use `encode(into:)`, to handle that case explicitly.
    public func encode(integrity: MessageIntegrity? = nil, fingerprint: Bool = false) -> [UInt8] {
        encode(integrity: integrity, fingerprint: fingerprint, padding: 0)
    }

    /// Encodes into `buffer` and returns the number of bytes written, or nil when the message
    /// does not fit `buffer` or a STUN length field. Allocates only inside HMAC-SHA1.
    public func encode(into buffer: UnsafeMutableRawBufferPointer, integrity: MessageIntegrity? = nil,
                       fingerprint: Bool = false) -> Int? {
        encode(into: buffer, integrity: integrity, fingerprint: fingerprint, padding: 0)
    }

    /// `padding` fills the gaps after unaligned values. RFC 8489 §14 wants zeros; tests use 0x20
    /// to reproduce the RFC 5769 vectors, whose HMACs cover space padding.
    func encode(integrity: MessageIntegrity?, fingerprint: Bool, padding: UInt8) -> [UInt8] {
        guard let size = encodedSize(integrity: integrity, fingerprint: fingerprint) else { return [] }
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            count = encode(into: UnsafeMutableRawBufferPointer(buffer), integrity: integrity,
                           fingerprint: fingerprint, padding: padding) ?? 0
        }
    }

    func encode(into buffer: UnsafeMutableRawBufferPointer, integrity: MessageIntegrity?, fingerprint: Bool,
                padding: UInt8) -> Int? {
        guard let size = encodedSize(integrity: integrity, fingerprint: fingerprint), buffer.count >= size,
            let p = buffer.baseAddress
        else { return nil }
        let h = Message.headerSize
        p.storeBE16(type.rawValue, at: 0)
        p.storeBE32(Message.magicCookie, at: 4)
        transactionID.write(to: p, at: 8)
        var offset = h
        for attribute in attributes where !attribute.isTrailer {
            offset = attribute.write(to: p, at: offset, transactionID: transactionID, padding: padding)
        }
        if let integrity {
            // §14.5: the HMAC is computed with the length already counting the integrity
            // attribute, but nothing after it.
            let n = integrity.algorithm.macLength
            p.storeBE16(UInt16(offset + 4 + n - h), at: 2)
            p.storeBE16(integrity.algorithm.attributeType, at: offset)
            p.storeBE16(UInt16(n), at: offset + 2)
            HMACComputer.mac(integrity.algorithm, key: integrity.key,
                             header: UnsafeRawBufferPointer(start: p, count: h),
                             body: UnsafeRawBufferPointer(start: p + h, count: offset - h), into: p + offset + 4)
            offset += 4 + n
        }
        if fingerprint {
            // §14.7: likewise the CRC sees a length that includes FINGERPRINT.
            p.storeBE16(UInt16(offset + 8 - h), at: 2)
            let crc = Fingerprint.value(UnsafeRawBufferPointer(start: p, count: offset))
            p.storeBE16(AttributeType.fingerprint, at: offset)
            p.storeBE16(4, at: offset + 2)
            p.storeBE32(crc, at: offset + 4)
            offset += 8
        }
        p.storeBE16(UInt16(offset - h), at: 2)
        return offset
    }
}
