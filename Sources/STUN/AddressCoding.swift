import FZCore

/// The address value shared by MAPPED-ADDRESS, ALTERNATE-SERVER and the XOR-*-ADDRESS
/// attributes: a reserved byte, the family, the port and 4 or 16 address bytes (RFC 8489 §14.1).
///
/// The XOR form (§14.2) XORs the port with the cookie's top 16 bits, an IPv4 address with the
/// cookie, and an IPv6 address with the cookie followed by the transaction ID, so NATs that
/// rewrite binary copies of their public address in payloads leave it alone.
enum AddressCoding {
    static func length(_ address: SocketAddress) -> Int {
        switch address.ip {
        case .v4: 8
        case .v6: 20
        }
    }

    /// Nil for an unknown family or a length that does not match it.
    static func decode(_ v: UnsafeRawBufferPointer, xor transactionID: TransactionID?) -> SocketAddress? {
        guard v.count >= 4 else { return nil }
        // v[0] is reserved: sent as zero, ignored on receipt (§14.1).
        var port = v.be16(at: 2)
        if transactionID != nil { port ^= UInt16(truncatingIfNeeded: Message.magicCookie >> 16) }
        switch v[1] {
        case AddressFamily.v4.rawValue:
            guard v.count == 8 else { return nil }
            var a = v.be32(at: 4)
            if transactionID != nil { a ^= Message.magicCookie }
            return SocketAddress(IPv4Address(a), port)
        case AddressFamily.v6.rawValue:
            guard v.count == 20 else { return nil }
            var high = v.be64(at: 4)
            var low = v.be64(at: 12)
            if let t = transactionID {
                let key = xorKey(t)
                high ^= key.high
                low ^= key.low
            }
            return SocketAddress(IPv6Address(high: high, low: low), port)
        default:
            return nil
        }
    }

    static func write(_ address: SocketAddress, xor transactionID: TransactionID?, to p: UnsafeMutableRawPointer) {
        var port = address.port
        if transactionID != nil { port ^= UInt16(truncatingIfNeeded: Message.magicCookie >> 16) }
        p.storeBytes(of: 0, as: UInt8.self)
        p.storeBytes(of: address.family.rawValue, toByteOffset: 1, as: UInt8.self)
        p.storeBE16(port, at: 2)
        switch address.ip {
        case .v4(let a):
            p.storeBE32(transactionID == nil ? a.value : a.value ^ Message.magicCookie, at: 4)
        case .v6(let a):
            var high = a.high
            var low = a.low
            if let t = transactionID {
                let key = xorKey(t)
                high ^= key.high
                low ^= key.low
            }
            p.storeBE64(high, at: 4)
            p.storeBE64(low, at: 12)
        }
    }

    /// The 128-bit IPv6 XOR key: magic cookie || transaction ID.
    private static func xorKey(_ t: TransactionID) -> (high: UInt64, low: UInt64) {
        (UInt64(Message.magicCookie) << 32 | t.high >> 32, (t.high & 0xFFFF_FFFF) << 32 | UInt64(t.low))
    }
}
