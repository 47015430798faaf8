import FZCore

/// What the client writes back into its TUN device for a packet to a resource it was denied, so
/// the application fails at once ("connection refused", "no route") instead of timing out:
/// a TCP RST for TCP (RFC 9293 §3.5.2), an ICMP destination unreachable, administratively
/// prohibited, for anything else (RFC 1812 §5.2.7.1: type 3 code 13; RFC 4443 §3.1: type 1 code 1).
/// Never an answer to a RST or to an ICMP error (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)).
public enum Unreachable {
    static let tcp: UInt8 = 6
    static let icmp: UInt8 = 1
    static let icmpv6: UInt8 = 58

    /// The reply to `packet` (an IP packet the client read from TUN), or nil when none is due or
    /// the packet is malformed.
    public static func reply(to packet: [UInt8]) -> [UInt8]? {
        guard let first = packet.first else { return nil }
        switch first >> 4 {
        case 4: return replyV4(packet)
        case 6: return replyV6(packet)
        default: return nil
        }
    }

    /// The destination address of an IPv4 or IPv6 packet.
    public static func destination(of packet: UnsafeRawBufferPointer) -> IPAddress? {
        guard let first = packet.first else { return nil }
        switch first >> 4 {
        case 4 where packet.count >= 20:
            return .v4(IPv4Address(packet[16], packet[17], packet[18], packet[19]))
        case 6 where packet.count >= 40:
            return .v6(IPv6Address(bytes: packet[24..<40]))
        default:
            return nil
        }
    }

    // MARK: IPv4

    private static func replyV4(_ p: [UInt8]) -> [UInt8]? {
        guard p.count >= 20 else { return nil }
        let headerLength = Int(p[0] & 0x0F) * 4
        let total = Int(p[2]) << 8 | Int(p[3])
        guard headerLength >= 20, total >= headerLength, total <= p.count else { return nil }
        // Only the first fragment carries the transport header.
        let fragmentOffset = (Int(p[6]) << 8 | Int(p[7])) & 0x1FFF
        guard fragmentOffset == 0 else { return nil }
        let source = Array(p[12..<16]), destination = Array(p[16..<20])
        let payload = Array(p[headerLength..<total])
        if p[9] == tcp {
            guard let segment = resetSegment(answering: payload) else { return nil }
            return ipv4(from: destination, to: source, protocol: tcp, payload: segment, checksumAt: 16)
        }
        // ICMP errors (and anything not an echo request) get no ICMP error back.
        if p[9] == icmp, payload.first != 8 { return nil }
        var body: [UInt8] = [3, 13, 0, 0, 0, 0, 0, 0]
        body += p[0..<min(total, headerLength + 8)]
        let checksum = ~InternetChecksum.fold(body.withUnsafeBytes { InternetChecksum.sum($0) })
        body[2] = UInt8(checksum >> 8)
        body[3] = UInt8(checksum & 0xFF)
        return ipv4(from: destination, to: source, protocol: icmp, payload: body, checksumAt: nil)
    }

    /// An IPv4 packet; `checksumAt`: where the transport checksum (over the pseudo-header) goes.
    private static func ipv4(from source: [UInt8], to destination: [UInt8], protocol proto: UInt8, payload: [UInt8],
                             checksumAt: Int?) -> [UInt8] {
        let total = 20 + payload.count
        var packet: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0x40, 0, 64, proto, 0, 0]
        packet += source
        packet += destination
        let headerChecksum = ~InternetChecksum.fold(packet.withUnsafeBytes { InternetChecksum.sum($0) })
        packet[10] = UInt8(headerChecksum >> 8)
        packet[11] = UInt8(headerChecksum & 0xFF)
        packet += payload
        if let at = checksumAt { fillTransportChecksum(&packet, headerLength: 20, protocol: proto, at: at) }
        return packet
    }

    // MARK: IPv6

    private static func replyV6(_ p: [UInt8]) -> [UInt8]? {
        guard p.count >= 40 else { return nil }
        let payloadLength = Int(p[4]) << 8 | Int(p[5])
        guard 40 + payloadLength <= p.count else { return nil }
        let source = Array(p[8..<24]), destination = Array(p[24..<40])
        let payload = Array(p[40..<40 + payloadLength])
        if p[6] == tcp {
            guard let segment = resetSegment(answering: payload) else { return nil }
            return ipv6(from: destination, to: source, nextHeader: tcp, payload: segment, checksumAt: 16)
        }
        // ICMPv6 errors (types below 128) get no error back.
        if p[6] == icmpv6, (payload.first ?? 0) < 128 { return nil }
        // As much of the offending packet as fits in the minimum MTU (RFC 4443 §3.1).
        var body: [UInt8] = [1, 1, 0, 0, 0, 0, 0, 0]
        body += p[0..<min(40 + payloadLength, 1280 - 40 - 8)]
        return ipv6(from: destination, to: source, nextHeader: icmpv6, payload: body, checksumAt: 2)
    }

    private static func ipv6(from source: [UInt8], to destination: [UInt8], nextHeader: UInt8, payload: [UInt8],
                             checksumAt: Int) -> [UInt8] {
        var packet: [UInt8] = [0x60, 0, 0, 0, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF), nextHeader, 64]
        packet += source
        packet += destination
        packet += payload
        fillTransportChecksum(&packet, headerLength: 40, protocol: nextHeader, at: checksumAt)
        return packet
    }

    // MARK: TCP

    /// The RST that answers `segment` (RFC 9293 §3.10.7.1, CLOSED state): with the segment's ACK,
    /// `<SEQ=SEG.ACK><CTL=RST>`; without, `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`. Nil for a
    /// RST or a truncated header.
    static func resetSegment(answering segment: [UInt8]) -> [UInt8]? {
        guard segment.count >= 20 else { return nil }
        let dataOffset = Int(segment[12] >> 4) * 4
        guard dataOffset >= 20, dataOffset <= segment.count else { return nil }
        let flags = segment[13]
        let fin: UInt8 = 0x01, syn: UInt8 = 0x02, rst: UInt8 = 0x04, ack: UInt8 = 0x10
        guard flags & rst == 0 else { return nil }
        func load32(_ at: Int) -> UInt32 { segment[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) } }
        var reply = [UInt8](repeating: 0, count: 20)
        reply[0] = segment[2]; reply[1] = segment[3]  // ports swapped
        reply[2] = segment[0]; reply[3] = segment[1]
        func store32(_ v: UInt32, at: Int) {
            for i in 0..<4 { reply[at + i] = UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32(i))) }
        }
        if flags & ack != 0 {
            store32(load32(8), at: 4)
            reply[13] = rst
        } else {
            var length = UInt32(segment.count - dataOffset)
            if flags & syn != 0 { length &+= 1 }
            if flags & fin != 0 { length &+= 1 }
            store32(load32(4) &+ length, at: 8)
            reply[13] = rst | ack
        }
        reply[12] = 5 << 4
        return reply
    }

    /// Writes the checksum of the transport payload after the IP header (pseudo-header included).
    private static func fillTransportChecksum(_ packet: inout [UInt8], headerLength: Int, protocol proto: UInt8, at offset: Int) {
        let length = packet.count - headerLength
        let checksum = packet.withUnsafeBytes { bytes -> UInt16 in
            let pseudo = InternetChecksum.pseudoHeaderSum(ipPacket: bytes, protocol: proto, length: length)
            return ~InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: bytes[headerLength...]), initial: pseudo))
        }
        packet[headerLength + offset] = UInt8(checksum >> 8)
        packet[headerLength + offset + 1] = UInt8(checksum & 0xFF)
    }
}
