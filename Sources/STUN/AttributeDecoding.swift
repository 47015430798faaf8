import FZCore

extension Attribute {
    /// The most bytes a decoder must accept for USERNAME, REALM, NONCE, SOFTWARE and an
    /// ERROR-CODE reason: RFC 8489 §14.3, §14.8-§14.10 and §14.14 require parsing up to 763
    /// bytes for compatibility with RFC 5389 (senders stay below 509 bytes / 128 characters).
    public static let maxTextBytes = 763

    /// RFC 8489 §14.16: ALTERNATE-DOMAIN "MUST NOT contain more than 255 bytes".
    public static let maxDomainBytes = 255

    /// Parses one attribute value. Nil means the value is malformed for its type (the caller
    /// reports `badAttribute`); unknown types are always accepted as `.unknown`.
    static func decode(type: UInt16, value v: UnsafeRawBufferPointer, transactionID: TransactionID) -> Attribute? {
        switch type {
        case AttributeType.mappedAddress:
            return AddressCoding.decode(v, xor: nil).map { .mappedAddress($0) }
        case AttributeType.xorMappedAddress:
            return AddressCoding.decode(v, xor: transactionID).map { .xorMappedAddress($0) }
        case AttributeType.alternateServer:
            return AddressCoding.decode(v, xor: nil).map { .alternateServer($0) }
        case AttributeType.xorPeerAddress:
            return AddressCoding.decode(v, xor: transactionID).map { .xorPeerAddress($0) }
        case AttributeType.xorRelayedAddress:
            return AddressCoding.decode(v, xor: transactionID).map { .xorRelayedAddress($0) }

        case AttributeType.username:
            return text(v, max: maxTextBytes).map { .username($0) }
        case AttributeType.realm:
            return text(v, max: maxTextBytes).map { .realm($0) }
        case AttributeType.nonce:
            return text(v, max: maxTextBytes).map { .nonce($0) }
        case AttributeType.software:
            return text(v, max: maxTextBytes).map { .software($0) }
        case AttributeType.alternateDomain:
            // A DNS name with A-labels (RFC 5890) is plain ASCII.
            guard v.count <= maxDomainBytes, v.allSatisfy({ $0 < 0x80 }) else { return nil }
            return text(v, max: maxDomainBytes).map { .alternateDomain($0) }

        case AttributeType.messageIntegrity:
            return v.count == 20 ? .messageIntegrity(Array(v)) : nil
        case AttributeType.messageIntegritySHA256:
            // §14.6: at least 16 bytes, at most 32, a multiple of four.
            return (16...32).contains(v.count) && v.count % 4 == 0 ? .messageIntegritySHA256(Array(v)) : nil
        case AttributeType.userhash:
            return v.count == 32 ? .userhash(Array(v)) : nil
        case AttributeType.fingerprint:
            return v.count == 4 ? .fingerprint(v.be32(at: 0)) : nil

        case AttributeType.errorCode:
            guard v.count >= 4, let code = errorCode(v) else { return nil }
            return .errorCode(code)
        case AttributeType.addressErrorCode:
            // RFC 8656 §18.12: the family takes the first byte of ERROR-CODE's reserved bits.
            guard v.count >= 4, let family = AddressFamily(rawValue: v[0]), let code = errorCode(v) else { return nil }
            return .addressErrorCode(family: family, code)
        case AttributeType.unknownAttributes:
            guard v.count % 2 == 0 else { return nil }
            return .unknownAttributes(stride(from: 0, to: v.count, by: 2).map { v.be16(at: $0) })

        case AttributeType.passwordAlgorithm:
            guard let (algorithm, length) = passwordAlgorithm(v, at: 0),
                v.count == 4 + length || v.count == 4 + padded4(length)
            else { return nil }
            return .passwordAlgorithm(algorithm)
        case AttributeType.passwordAlgorithms:
            var list: [PasswordAlgorithm] = []
            var offset = 0
            while offset < v.count {
                guard let (algorithm, length) = passwordAlgorithm(v, at: offset) else { return nil }
                list.append(algorithm)
                if 4 + padded4(length) <= v.count - offset {
                    offset += 4 + padded4(length)
                } else if 4 + length == v.count - offset {
                    // The last entry may leave its parameter padding to the attribute padding.
                    offset = v.count
                } else {
                    return nil
                }
            }
            return .passwordAlgorithms(list)

        case AttributeType.channelNumber:
            // The two RFFU bytes are ignored on receipt (RFC 8656 §18.1).
            return v.count == 4 ? .channelNumber(v.be16(at: 0)) : nil
        case AttributeType.lifetime:
            return v.count == 4 ? .lifetime(v.be32(at: 0)) : nil
        case AttributeType.data:
            return .data(Array(v))
        case AttributeType.requestedAddressFamily:
            guard v.count == 4, let family = AddressFamily(rawValue: v[0]) else { return nil }
            return .requestedAddressFamily(family)
        case AttributeType.additionalAddressFamily:
            guard v.count == 4, let family = AddressFamily(rawValue: v[0]) else { return nil }
            return .additionalAddressFamily(family)
        case AttributeType.evenPort:
            // One byte: the R bit, then seven reserved bits (RFC 8656 §18.7).
            return v.count == 1 ? .evenPort(reserve: v[0] & 0x80 != 0) : nil
        case AttributeType.requestedTransport:
            return v.count == 4 ? .requestedTransport(v[0]) : nil
        case AttributeType.dontFragment:
            return v.count == 0 ? .dontFragment : nil
        case AttributeType.reservationToken:
            return v.count == 8 ? .reservationToken(v.be64(at: 0)) : nil
        case AttributeType.icmp:
            // RFC 8656 §18.13: 16 reserved bits, ICMP type, ICMP code, 32 bits of error data. The
            // RFC's figure draws the type/code boundary off the byte boundary; ICMPv4 and ICMPv6
            // both carry 8-bit type and code, which is what is read here.
            return v.count == 8 ? .icmp(type: v[2], code: v[3], data: v.be32(at: 4)) : nil

        case AttributeType.priority:
            return v.count == 4 ? .priority(v.be32(at: 0)) : nil
        case AttributeType.useCandidate:
            return v.count == 0 ? .useCandidate : nil
        case AttributeType.iceControlled:
            return v.count == 8 ? .iceControlled(v.be64(at: 0)) : nil
        case AttributeType.iceControlling:
            return v.count == 8 ? .iceControlling(v.be64(at: 0)) : nil

        default:
            return .unknown(type: type, value: Array(v))
        }
    }

    /// Strictly valid UTF-8 of at most `max` bytes (no overlongs, surrogates or code points
    /// past U+10FFFF).
    private static func text(_ v: UnsafeRawBufferPointer, max: Int) -> String? {
        guard v.count <= max else { return nil }
        return String(validating: v, as: UTF8.self)
    }

    /// ERROR-CODE layout (RFC 8489 §14.8): 21 reserved bits, a 3-bit class (3-6), an 8-bit number
    /// (0-99), then a UTF-8 reason phrase.
    private static func errorCode(_ v: UnsafeRawBufferPointer) -> ErrorCode? {
        let cls = Int(v[2] & 0x07)
        let number = Int(v[3])
        guard (3...6).contains(cls), number < 100,
            let reason = text(v.slice(4, v.count - 4), max: maxTextBytes)
        else { return nil }
        return ErrorCode(cls * 100 + number, reason: reason)
    }

    /// One PASSWORD-ALGORITHM entry at `offset` (RFC 8489 §14.11, §14.12): algorithm, parameter
    /// length, parameters. Returns the entry and its unpadded parameter length; nil when the
    /// parameters run past the end of `v`.
    private static func passwordAlgorithm(_ v: UnsafeRawBufferPointer, at offset: Int) -> (PasswordAlgorithm, Int)? {
        guard v.count - offset >= 4 else { return nil }
        let id = v.be16(at: offset)
        let length = Int(v.be16(at: offset + 2))
        guard length <= v.count - offset - 4 else { return nil }
        return (PasswordAlgorithm(id: id, parameters: Array(v.slice(offset + 4, length))), length)
    }
}
