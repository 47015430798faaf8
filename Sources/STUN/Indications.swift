import FZCore

/// A Send indication (RFC 8656 §10.2) read where it lies in the datagram, for the relay's data
/// path: `Message.decode` copies every attribute into arrays, which a relay cannot afford per
/// packet. `scan` walks the attributes over the raw bytes and keeps only what relaying needs.
///
/// Where it answers, it answers as `Message.decode` would: `indication` only for a message the
/// decoder accepts, with the same values (`peer` is `Message.xorPeerAddresses.first`, `data`
/// holds the bytes of `Message.data`), and `malformed` only for one it rejects. It knows
/// XOR-PEER-ADDRESS, DATA, DONT-FRAGMENT, FINGERPRINT and the types the codec does not know; any
/// other known attribute (MESSAGE-INTEGRITY, whose presence changes which attributes count,
/// SOFTWARE, whose UTF-8 must be validated...) makes it answer `needsDecoder`, and the caller
/// decodes the message in full.
public struct SendIndication: Sendable, Equatable {
    /// The first XOR-PEER-ADDRESS (RFC 8656 §18.3), nil when there is none.
    public var peer: SocketAddress?
    /// Where the first DATA value (RFC 8656 §18.4) lies in the datagram, padding excluded; nil
    /// when there is none.
    public var data: Range<Int>?
    /// Whether DONT-FRAGMENT (RFC 8656 §18.9) is present.
    public var dontFragment: Bool
    /// Whether a comprehension-required type (below 0x8000) the codec does not know is present
    /// (what `Message.unknownComprehensionRequired` lists).
    public var hasUnknownComprehensionRequired: Bool

    public enum Scan: Sendable, Equatable {
        /// A well-formed Send indication.
        case indication(SendIndication)
        /// A Send indication `Message.decode` rejects (bad length, an attribute running past the
        /// end, a malformed known value, FINGERPRINT not last or wrong).
        case malformed
        /// Not a Send indication, or one with attributes only the full decoder handles.
        case needsDecoder
    }

    /// The message type of a Send indication: method 0x006, class indication (RFC 8489 §5).
    public static let messageType: UInt16 = 0x0016

    /// Reads `p` as one Send indication without allocating. The checks and their order follow
    /// `Message.decode` (RFC 8489 §5, §14): the scan stops at the first error the decoder would
    /// stop at, unless it meets an attribute it leaves to the decoder first.
    public static func scan(_ p: UnsafeRawBufferPointer) -> Scan {
        let count = p.count
        guard count >= Message.headerSize, p.be16(at: 0) == messageType, p.be32(at: 4) == Message.magicCookie else {
            return .needsDecoder
        }
        // §5: one datagram carries exactly one message, padded to four bytes.
        let length = Int(p.be16(at: 2))
        guard length % 4 == 0, length == count - Message.headerSize else { return .malformed }
        let transactionID = TransactionID(reading: p, at: 8)
        var result = SendIndication(peer: nil, data: nil, dontFragment: false, hasUnknownComprehensionRequired: false)
        var fingerprintOffset: Int?
        var offset = Message.headerSize
        while offset < count {
            let type = p.be16(at: offset)
            let valueLength = Int(p.be16(at: offset + 2))
            guard padded4(valueLength) <= count - offset - 4 else { return .malformed }
            // §14.7: FINGERPRINT is the last attribute.
            guard fingerprintOffset == nil else { return .malformed }
            let value = offset + 4
            switch type {
            case AttributeType.xorPeerAddress:
                guard let address = AddressCoding.decode(p.slice(value, valueLength), xor: transactionID) else {
                    return .malformed
                }
                if result.peer == nil { result.peer = address }
            case AttributeType.data:
                if result.data == nil { result.data = value..<(value + valueLength) }
            case AttributeType.dontFragment:
                guard valueLength == 0 else { return .malformed }
                result.dontFragment = true
            case AttributeType.fingerprint:
                guard valueLength == 4 else { return .malformed }
                fingerprintOffset = offset
            default:
                // MESSAGE-INTEGRITY(-SHA256) lands here too: after one, the decoder ignores what
                // follows (§14.5, §14.6), which only it tracks.
                guard !AttributeType.isKnown(type) else { return .needsDecoder }
                if AttributeType.isComprehensionRequired(type) { result.hasUnknownComprehensionRequired = true }
            }
            offset = value + padded4(valueLength)
        }
        // §14.7: the CRC covers the message up to FINGERPRINT; the length already counts it.
        if let f = fingerprintOffset, Fingerprint.value(p.slice(0, f)) != p.be32(at: f + 4) { return .malformed }
        return .indication(result)
    }

    /// Where the value `Message.data` returns lies in `bytes`, a datagram `Message.decode`
    /// accepted: the first DATA before any MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256, after
    /// which the decoder ignores it (RFC 8489 §14.5, §14.6). Nil when there is none.
    public static func dataRange(inDecoded p: UnsafeRawBufferPointer) -> Range<Int>? {
        var offset = Message.headerSize
        while offset + 4 <= p.count {
            let type = p.be16(at: offset)
            let valueLength = Int(p.be16(at: offset + 2))
            guard valueLength <= p.count - offset - 4 else { return nil }
            switch type {
            case AttributeType.data: return (offset + 4)..<(offset + 4 + valueLength)
            case AttributeType.messageIntegrity, AttributeType.messageIntegritySHA256: return nil
            default: offset += 4 + padded4(valueLength)
            }
        }
        return nil
    }
}

/// The Data indication a relay sends a client for a peer's datagram when no channel is bound
/// (RFC 8656 §11.3), written straight into caller memory: header, XOR-PEER-ADDRESS, DATA.
/// The bytes equal what `Message(type: Data indication, attributes: [.xorPeerAddress(peer),
/// .data(payload)]).encode()` produces for the same transaction ID, without building a `Message`.
public enum DataIndication {
    /// The message type of a Data indication: method 0x007, class indication (RFC 8489 §5).
    public static let messageType: UInt16 = 0x0017

    /// The bytes in front of the payload: the 20-byte header, XOR-PEER-ADDRESS (12 bytes for an
    /// IPv4 peer, 24 for IPv6) and DATA's 4-byte attribute header.
    public static func overhead(peer: SocketAddress) -> Int { Message.headerSize + 4 + AddressCoding.length(peer) + 4 }

    /// The size of the indication for `payloadLength` bytes of data, padding included; nil when the
    /// attributes exceed the 65,535 bytes a STUN length field expresses (a peer datagram near
    /// 64 KiB, which only a channel can carry).
    public static func size(peer: SocketAddress, payloadLength: Int) -> Int? {
        let total = overhead(peer: peer) + padded4(payloadLength)
        return payloadLength >= 0 && total - Message.headerSize <= Message.maxBodyLength ? total : nil
    }

    /// Writes the indication for `payload` from `peer` into `buffer` and returns its size; nil
    /// when it does not fit `buffer` or a STUN length field. The payload is moved (memmove) to
    /// `overhead(peer:)` bytes into `buffer`, so it may already lie there or overlap it; zero
    /// padding follows it to a multiple of four (RFC 8489 §14). `transactionID` must be fresh
    /// and uniformly random (RFC 8489 §5; see `TransactionIDPool`).
    public static func write(peer: SocketAddress, transactionID: TransactionID, payload: UnsafeRawBufferPointer,
                             into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard let size = size(peer: peer, payloadLength: payload.count), buffer.count >= size,
            let p = buffer.baseAddress
        else { return nil }
        let addressLength = AddressCoding.length(peer)
        let start = overhead(peer: peer)
        // The payload first: the header must not overwrite it if it overlaps the header's place.
        if payload.count > 0 { (p + start).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
        (p + start + payload.count).initializeMemory(as: UInt8.self, repeating: 0, count: size - start - payload.count)
        p.storeBE16(messageType, at: 0)
        p.storeBE16(UInt16(size - Message.headerSize), at: 2)
        p.storeBE32(Message.magicCookie, at: 4)
        transactionID.write(to: p, at: 8)
        p.storeBE16(AttributeType.xorPeerAddress, at: 20)
        p.storeBE16(UInt16(addressLength), at: 22)
        AddressCoding.write(peer, xor: transactionID, to: p + 24)
        p.storeBE16(AttributeType.data, at: 24 + addressLength)
        p.storeBE16(UInt16(payload.count), at: 26 + addressLength)
        return size
    }
}
