import FZCore

extension Attribute {
    /// The unpadded value length this attribute encodes to; must agree with `writeValue`.
    var valueLength: Int {
        switch self {
        case .mappedAddress(let a), .xorMappedAddress(let a), .alternateServer(let a),
            .xorPeerAddress(let a), .xorRelayedAddress(let a):
            return AddressCoding.length(a)
        case .username(let s), .realm(let s), .nonce(let s), .software(let s), .alternateDomain(let s):
            return s.utf8.count
        case .messageIntegrity(let b), .messageIntegritySHA256(let b), .userhash(let b), .data(let b):
            return b.count
        case .unknown(_, let b):
            return b.count
        case .errorCode(let e), .addressErrorCode(_, let e):
            return 4 + e.reason.utf8.count
        case .unknownAttributes(let types):
            return 2 * types.count
        case .passwordAlgorithm(let a):
            return a.encodedLength
        case .passwordAlgorithms(let list):
            return list.reduce(0) { $0 + $1.encodedLength }
        case .fingerprint, .lifetime, .channelNumber, .requestedAddressFamily, .requestedTransport,
            .additionalAddressFamily, .priority:
            return 4
        case .reservationToken, .icmp, .iceControlled, .iceControlling:
            return 8
        case .evenPort:
            return 1
        case .dontFragment, .useCandidate:
            return 0
        }
    }

    /// Writes type, length, value and padding at `p + offset`; returns the offset after it.
    /// The caller has checked that the value fits a 16-bit length and the buffer.
    func write(to p: UnsafeMutableRawPointer, at offset: Int, transactionID: TransactionID, padding: UInt8) -> Int {
        let length = valueLength
        p.storeBE16(type, at: offset)
        p.storeBE16(UInt16(truncatingIfNeeded: length), at: offset + 2)
        writeValue(to: p + offset + 4, transactionID: transactionID)
        let end = offset + 4 + length
        let paddedEnd = offset + 4 + padded4(length)
        if paddedEnd > end {
            (p + end).initializeMemory(as: UInt8.self, repeating: padding, count: paddedEnd - end)
        }
        return paddedEnd
    }

    private func writeValue(to p: UnsafeMutableRawPointer, transactionID: TransactionID) {
        switch self {
        case .mappedAddress(let a), .alternateServer(let a):
            AddressCoding.write(a, xor: nil, to: p)
        case .xorMappedAddress(let a), .xorPeerAddress(let a), .xorRelayedAddress(let a):
            AddressCoding.write(a, xor: transactionID, to: p)
        case .username(let s), .realm(let s), .nonce(let s), .software(let s), .alternateDomain(let s):
            p.copy(utf8: s, at: 0)
        case .messageIntegrity(let b), .messageIntegritySHA256(let b), .userhash(let b), .data(let b):
            p.copy(b, at: 0)
        case .unknown(_, let b):
            p.copy(b, at: 0)
        case .errorCode(let e):
            Attribute.writeErrorCode(e, family: nil, to: p)
        case .addressErrorCode(let family, let e):
            Attribute.writeErrorCode(e, family: family, to: p)
        case .unknownAttributes(let types):
            for (i, t) in types.enumerated() { p.storeBE16(t, at: 2 * i) }
        case .passwordAlgorithm(let a):
            Attribute.writePasswordAlgorithm(a, to: p)
        case .passwordAlgorithms(let list):
            var offset = 0
            for a in list {
                Attribute.writePasswordAlgorithm(a, to: p + offset)
                offset += a.encodedLength
            }
        case .fingerprint(let v), .lifetime(let v), .priority(let v):
            p.storeBE32(v, at: 0)
        case .channelNumber(let n):
            p.storeBE16(n, at: 0)
            p.storeBE16(0, at: 2)
        case .requestedAddressFamily(let f), .additionalAddressFamily(let f):
            p.storeBE32(UInt32(f.rawValue) << 24, at: 0)
        case .requestedTransport(let proto):
            p.storeBE32(UInt32(proto) << 24, at: 0)
        case .evenPort(let reserve):
            p.storeBytes(of: reserve ? 0x80 : 0, as: UInt8.self)
        case .reservationToken(let v), .iceControlled(let v), .iceControlling(let v):
            p.storeBE64(v, at: 0)
        case .icmp(let type, let code, let data):
            p.storeBE16(0, at: 0)
            p.storeBytes(of: type, toByteOffset: 2, as: UInt8.self)
            p.storeBytes(of: code, toByteOffset: 3, as: UInt8.self)
            p.storeBE32(data, at: 4)
        case .dontFragment, .useCandidate:
            break
        }
    }

    private static func writeErrorCode(_ e: ErrorCode, family: AddressFamily?, to p: UnsafeMutableRawPointer) {
        let (cls, number) = e.classAndNumber
        p.storeBytes(of: family?.rawValue ?? 0, as: UInt8.self)
        p.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: cls & 0x07, toByteOffset: 2, as: UInt8.self)
        p.storeBytes(of: number, toByteOffset: 3, as: UInt8.self)
        p.copy(utf8: e.reason, at: 4)
    }

    /// Algorithm, parameter length, parameters zero-padded to four bytes (RFC 8489 §14.11).
    private static func writePasswordAlgorithm(_ a: PasswordAlgorithm, to p: UnsafeMutableRawPointer) {
        p.storeBE16(a.id, at: 0)
        p.storeBE16(UInt16(truncatingIfNeeded: a.parameters.count), at: 2)
        p.copy(a.parameters, at: 4)
        let end = 4 + a.parameters.count
        let paddedEnd = a.encodedLength
        if paddedEnd > end {
            (p + end).initializeMemory(as: UInt8.self, repeating: 0, count: paddedEnd - end)
        }
    }
}
