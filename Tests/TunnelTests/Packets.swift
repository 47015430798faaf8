import FZCore

/// Hand-built IP packets for filter and routing tests: real headers, the fields that matter set.
enum Packets {
    static let tcp: UInt8 = 6, udp: UInt8 = 17, icmp: UInt8 = 1, icmpV6: UInt8 = 58

    /// An IPv4 packet from `source` to `destination` with a transport header whose destination
    /// port is `port` (for TCP/UDP), `fragmentOffset` in 8-byte units.
    static func v4(_ source: String, _ destination: String, protocol number: UInt8 = 17, port: UInt16 = 53,
                   fragmentOffset: UInt16 = 0, payload: Int = 12) -> [UInt8] {
        let s = IPv4Address(source)!.value, d = IPv4Address(destination)!.value
        let total = 20 + payload
        var p: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1,
                          UInt8(fragmentOffset >> 8), UInt8(fragmentOffset & 0xFF), 64, number, 0, 0]
        p += bytes(s) + bytes(d)
        var body = [UInt8](repeating: 0xAB, count: payload)
        if payload >= 4 { body[0] = 0x30; body[1] = 0x39; body[2] = UInt8(port >> 8); body[3] = UInt8(port & 0xFF) }
        return p + body
    }

    /// An IPv6 packet; `extensions` are (next-header code) of 8-byte extension headers to put
    /// before the transport header (44: a fragment header with `fragmentOffset`).
    static func v6(_ source: String, _ destination: String, protocol number: UInt8 = 17, port: UInt16 = 53,
                   extensions: [UInt8] = [], fragmentOffset: UInt16 = 0, payload: Int = 12) -> [UInt8] {
        let s = IPv6Address(source)!, d = IPv6Address(destination)!
        let chain = extensions + [number]
        var p: [UInt8] = [0x60, 0, 0, 0, UInt8((payload + 8 * extensions.count) >> 8),
                          UInt8((payload + 8 * extensions.count) & 0xFF), chain[0], 64]
        p += bytes(s.high) + bytes(s.low) + bytes(d.high) + bytes(d.low)
        for (i, code) in extensions.enumerated() {
            var ext = [UInt8](repeating: 0, count: 8)
            ext[0] = chain[i + 1]
            if code == 44 { let v = fragmentOffset << 3; ext[2] = UInt8(v >> 8); ext[3] = UInt8(v & 0xFF) }
            p += ext
        }
        var body = [UInt8](repeating: 0xCD, count: payload)
        if payload >= 4 { body[2] = UInt8(port >> 8); body[3] = UInt8(port & 0xFF) }
        return p + body
    }

    static func bytes(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
    static func bytes(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }
}
