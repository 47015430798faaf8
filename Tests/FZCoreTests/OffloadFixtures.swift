import FZCore

// Packet builders and a byte-by-byte checksum for the offload tests. Everything here is written
// independently of the code under test: checksums come from `referenceSum`, never InternetChecksum.

/// RFC 1071 done the obvious way: big-endian 16-bit words, a zero byte padding an odd end, an
/// end-around carry after every addition. Not complemented.
func referenceSum(_ bytes: [UInt8]) -> UInt16 {
    var s: UInt32 = 0
    var i = 0
    while i < bytes.count {
        let high = UInt32(bytes[i])
        let low = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
        s += high << 8 | low
        if s > 0xFFFF { s = (s & 0xFFFF) + 1 }
        i += 2
    }
    return UInt16(s)
}

/// The pseudo-header as bytes (RFC 793 §3.1 / RFC 8200 §8.1).
func referencePseudoHeader(_ ip: [UInt8], proto: UInt8, length: Int) -> [UInt8] {
    if ip[0] >> 4 == 4 {
        return Array(ip[12..<20]) + [0, proto, UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
    }
    return Array(ip[8..<40]) + [
        UInt8(length >> 24 & 0xFF), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF),
        0, 0, 0, proto,
    ]
}

func be16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) << 8 | UInt16(b[at + 1]) }
func be32(_ b: [UInt8], _ at: Int) -> UInt32 { UInt32(be16(b, at)) << 16 | UInt32(be16(b, at + 2)) }
func put16(_ b: inout [UInt8], _ at: Int, _ v: UInt16) {
    b[at] = UInt8(v >> 8)
    b[at + 1] = UInt8(v & 0xFF)
}
func put32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) {
    put16(&b, at, UInt16(v >> 16))
    put16(&b, at + 2, UInt16(v & 0xFFFF))
}

enum Flag {
    static let fin: UInt8 = 0x01, syn: UInt8 = 0x02, rst: UInt8 = 0x04, psh: UInt8 = 0x08
    static let ack: UInt8 = 0x10, urg: UInt8 = 0x20, ece: UInt8 = 0x40, cwr: UInt8 = 0x80
}

/// NOP, NOP, timestamps (kind 8, length 10): the 12 option bytes Linux puts on every data segment.
let timestampOptions: [UInt8] = [1, 1, 8, 10, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0B, 0x0C, 0x0D]

/// A payload whose bytes differ from their neighbours', so a misplaced copy shows.
func patternPayload(_ count: Int, seed: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 7 &+ $0 >> 8 &+ seed) % 251) }
}

/// How the TCP checksum field of a built packet is filled.
enum ChecksumFill {
    /// A complete, valid checksum.
    case full
    /// The folded pseudo-header sum, as the kernel leaves it under CHECKSUM_PARTIAL.
    case partial
    /// A wrong value.
    case bad
}

struct TCPPacket {
    var v6 = false
    var source: [UInt8] = [192, 0, 2, 1]
    var destination: [UInt8] = [198, 51, 100, 7]
    var sourcePort: UInt16 = 40_000
    var destinationPort: UInt16 = 443
    var sequence: UInt32 = 1_000_000
    var acknowledgment: UInt32 = 5_000
    var flags: UInt8 = Flag.ack
    var window: UInt16 = 501
    var options: [UInt8] = timestampOptions
    var payload: [UInt8] = []
    var identification: UInt16 = 0x1234
    var ttl: UInt8 = 64
    var tos: UInt8 = 0
    var dontFragment = true
    var flowLabel: UInt32 = 0x5_4321
    var checksum = ChecksumFill.full
    /// Replaces the IPv4 total length or IPv6 payload length written.
    var lengthField: UInt16?
    /// Bytes appended after the packet (not counted in its length).
    var padding = 0

    static func v6(_ payload: [UInt8] = []) -> TCPPacket {
        var p = TCPPacket(v6: true, payload: payload)
        p.source = [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
        p.destination = [0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34]
        return p
    }

    var ipHeaderLength: Int { v6 ? 40 : 20 }
    var tcpHeaderLength: Int { 20 + options.count }

    var bytes: [UInt8] {
        precondition(options.count % 4 == 0)
        let tcpLength = tcpHeaderLength + payload.count
        var ip: [UInt8]
        if v6 {
            ip = [0x60 | UInt8(tos >> 4), UInt8(tos & 0x0F) << 4 | UInt8(flowLabel >> 16 & 0x0F),
                  UInt8(flowLabel >> 8 & 0xFF), UInt8(flowLabel & 0xFF), 0, 0, 6, ttl]
            put16(&ip, 4, lengthField ?? UInt16(truncatingIfNeeded: tcpLength))
            ip += source + destination
        } else {
            ip = [0x45, tos, 0, 0, 0, 0, dontFragment ? 0x40 : 0, 0, ttl, 6, 0, 0] + source + destination
            put16(&ip, 2, lengthField ?? UInt16(truncatingIfNeeded: 20 + tcpLength))
            put16(&ip, 4, identification)
            put16(&ip, 10, ~referenceSum(ip))
        }
        var tcp = [UInt8](repeating: 0, count: 20)
        put16(&tcp, 0, sourcePort)
        put16(&tcp, 2, destinationPort)
        put32(&tcp, 4, sequence)
        put32(&tcp, 8, acknowledgment)
        tcp[12] = UInt8(tcpHeaderLength / 4) << 4
        tcp[13] = flags
        put16(&tcp, 14, window)
        tcp += options + payload
        let pseudo = referencePseudoHeader(ip, proto: 6, length: tcpLength)
        switch checksum {
        case .full: put16(&tcp, 16, ~referenceSum(pseudo + tcp))
        case .partial: put16(&tcp, 16, referenceSum(pseudo))
        case .bad: put16(&tcp, 16, ~referenceSum(pseudo + tcp) ^ 0x0101)
        }
        return ip + tcp + [UInt8](repeating: 0xEE, count: padding)
    }

    /// The virtio header the kernel would put in front of this packet as a TSO segment.
    func gsoHeader(segment: Int) -> VirtioNetHeader {
        VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum, gsoType: v6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
            headerLength: UInt16(ipHeaderLength + tcpHeaderLength), gsoSize: UInt16(segment),
            checksumStart: UInt16(ipHeaderLength), checksumOffset: 16)
    }
}

/// A UDP packet over IPv4 or IPv6 (checksum field left for the caller).
func udpPacket(v6: Bool, payload: [UInt8], checksumField: UInt16) -> [UInt8] {
    let udpLength = 8 + payload.count
    var ip: [UInt8]
    if v6 {
        ip = [0x60, 0, 0, 0, UInt8(udpLength >> 8), UInt8(udpLength & 0xFF), 17, 64]
            + [0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1] + [0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    } else {
        ip = [0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
        put16(&ip, 2, UInt16(20 + udpLength))
        put16(&ip, 10, ~referenceSum(ip))
    }
    var udp: [UInt8] = [0x13, 0x88, 0x00, 0x35, UInt8(udpLength >> 8), UInt8(udpLength & 0xFF), 0, 0]
    put16(&udp, 6, checksumField)
    return ip + udp + payload
}

/// True if the transport checksum of the IP packet `p` (no extension headers) verifies.
func transportChecksumValid(_ p: [UInt8], proto: UInt8) -> Bool {
    let ipLength = p[0] >> 4 == 4 ? Int(p[0] & 0x0F) * 4 : 40
    let transport = Array(p[ipLength...])
    return referenceSum(referencePseudoHeader(p, proto: proto, length: transport.count) + transport) == 0xFFFF
}

/// True if the IPv4 header checksum of `p` verifies.
func ipv4HeaderChecksumValid(_ p: [UInt8]) -> Bool {
    referenceSum(Array(p[0..<Int(p[0] & 0x0F) * 4])) == 0xFFFF
}

/// Cuts `packet` with TCPSegmenter into arrays.
func segment(_ packet: [UInt8], header: VirtioNetHeader) throws -> [[UInt8]] {
    try packet.withUnsafeBytes { raw in
        let segmenter = try TCPSegmenter(header: header, packet: raw)
        var out = [UInt8](repeating: 0, count: segmenter.maximumSegmentSize)
        return (0..<segmenter.segmentCount).map { index in
            out.withUnsafeMutableBytes { Array($0[0..<segmenter.writeSegment(index, into: $0)]) }
        }
    }
}

/// The error TCPSegmenter reports for `packet`, or nil if it accepts it.
func segmenterError(_ packet: [UInt8], _ header: VirtioNetHeader) -> OffloadError? {
    packet.withUnsafeBytes { raw in
        do throws(OffloadError) {
            _ = try TCPSegmenter(header: header, packet: raw)
            return nil
        } catch {
            return error
        }
    }
}

struct Emitted: Equatable, CustomStringConvertible {
    var header: VirtioNetHeader
    var bytes: [UInt8]

    /// Short enough for a failed expectation to stay readable.
    var description: String {
        "gso \(header.gsoType)/\(header.gsoSize), \(bytes.count) bytes, sum \(referenceSum(bytes))"
    }
}

/// Pushes `packets` through `coalescer` (then flushes, unless told not to) and collects the writes.
func coalesce(_ packets: [[UInt8]], with coalescer: inout TCPCoalescer, flush: Bool = true) -> [Emitted] {
    var out: [Emitted] = []
    for p in packets {
        p.withUnsafeBytes { raw in coalescer.push(raw) { h, b in out.append(Emitted(header: h, bytes: Array(b))) } }
    }
    if flush { coalescer.flush { h, b in out.append(Emitted(header: h, bytes: Array(b))) } }
    return out
}

