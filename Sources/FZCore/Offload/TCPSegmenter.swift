/// Why a packet read from TUN cannot be cut into TCP segments.
public enum OffloadError: Error, Equatable, Sendable {
    /// The GSO type (ECN bit aside) is neither TCPv4 nor TCPv6.
    case unsupportedGSOType(UInt8)
    /// The IP version nibble does not match the GSO type.
    case ipVersionMismatch
    /// The packet ends inside its IP or TCP header.
    case truncated
    /// IPv4 IHL below 5.
    case invalidIPHeaderLength
    /// The IPv4 protocol or IPv6 next header is not TCP; IPv6 extension headers end up here.
    case notTCP
    /// `checksumStart` is not where the TCP header starts.
    case checksumStartMismatch
    /// `checksumOffset` is not 16, the TCP checksum field.
    case checksumOffsetMismatch
    /// TCP data offset below 5.
    case invalidTCPDataOffset
    /// `gsoSize` is zero.
    case zeroSegmentSize
    /// No payload after the TCP header.
    case emptyPayload
    /// A segment would not fit the 16-bit IPv4 total length or IPv6 payload length.
    case segmentTooLarge
}

/// TCP header flag bits (RFC 9293 §3.1), byte 13 of the header.
enum TCPFlag {
    static let fin: UInt8 = 0x01
    static let syn: UInt8 = 0x02
    static let rst: UInt8 = 0x04
    static let psh: UInt8 = 0x08
    static let ack: UInt8 = 0x10
    static let urg: UInt8 = 0x20
    static let ece: UInt8 = 0x40
    static let cwr: UInt8 = 0x80
}

/// Cuts a TCP segment the kernel handed over whole (TSO through `IFF_VNET_HDR`, GSO type TCPv4 or
/// TCPv6) into the wire-sized segments it stands for, as `tcp_gso_segment` (net/ipv4/tcp_offload.c)
/// would have: each one `gsoSize` payload bytes (the last one possibly fewer), sequence numbers
/// advancing by the payload, IPv4 identification by one, FIN and PSH only on the last segment and CWR
/// only on the first, and complete IP and TCP checksums.
///
/// Nothing in the input's length fields or checksum is used: the kernel leaves the IPv4 total
/// length or IPv6 payload length describing the whole segment (or 0 past 64 KiB), `hdr_len` is only
/// a hint, and the TCP checksum field holds just the pseudo-header sum. Lengths come from the buffer
/// and the headers; every checksum is computed afresh. IPv4 options are carried into every segment;
/// IPv6 extension headers are not supported (Linux TCP does not send them).
///
/// The segmenter points into `packet` and allocates nothing: the caller keeps `packet` valid and
/// unchanged while it uses the segmenter.
public struct TCPSegmenter {
    private let packet: UnsafeRawBufferPointer
    public let isIPv6: Bool
    /// 20 to 60 for IPv4 (IHL × 4), 40 for IPv6.
    public let ipHeaderLength: Int
    /// TCP data offset × 4, options included.
    public let tcpHeaderLength: Int
    /// `gsoSize`: payload bytes per segment.
    public let segmentPayloadSize: Int
    /// Payload bytes of the whole input segment.
    public let payloadLength: Int

    /// Validates `header` against `packet`, the IP packet after the 10-byte virtio header.
    public init(header: VirtioNetHeader, packet: UnsafeRawBufferPointer) throws(OffloadError) {
        let v6: Bool
        switch header.gsoType & ~VirtioNetHeader.gsoECN {
        case VirtioNetHeader.gsoTCPv4: v6 = false
        case VirtioNetHeader.gsoTCPv6: v6 = true
        default: throw .unsupportedGSOType(header.gsoType)
        }
        guard let first = packet.first else { throw .truncated }
        guard first >> 4 == (v6 ? 6 : 4) else { throw .ipVersionMismatch }
        let ipLength: Int
        if v6 {
            guard packet.count >= 40 else { throw .truncated }
            guard packet[6] == 6 else { throw .notTCP }
            ipLength = 40
        } else {
            guard packet.count >= 20 else { throw .truncated }
            ipLength = Int(first & 0x0F) * 4
            guard ipLength >= 20 else { throw .invalidIPHeaderLength }
            guard packet[9] == 6 else { throw .notTCP }
        }
        guard Int(header.checksumStart) == ipLength else { throw .checksumStartMismatch }
        guard header.checksumOffset == 16 else { throw .checksumOffsetMismatch }
        guard packet.count >= ipLength + 20 else { throw .truncated }
        let tcpLength = Int(packet[ipLength + 12] >> 4) * 4
        guard tcpLength >= 20 else { throw .invalidTCPDataOffset }
        guard packet.count >= ipLength + tcpLength else { throw .truncated }
        guard header.gsoSize > 0 else { throw .zeroSegmentSize }
        let payload = packet.count - ipLength - tcpLength
        guard payload > 0 else { throw .emptyPayload }
        let largest = min(Int(header.gsoSize), payload)
        guard (v6 ? 0 : ipLength) + tcpLength + largest <= 65535 else { throw .segmentTooLarge }

        self.packet = packet
        isIPv6 = v6
        ipHeaderLength = ipLength
        tcpHeaderLength = tcpLength
        segmentPayloadSize = Int(header.gsoSize)
        payloadLength = payload
    }

    /// ⌈payload / gsoSize⌉.
    public var segmentCount: Int { (payloadLength + segmentPayloadSize - 1) / segmentPayloadSize }

    /// The size of the largest segment (headers plus `gsoSize` payload bytes, or the whole payload
    /// if that is smaller), so the caller can size its buffers once.
    public var maximumSegmentSize: Int { ipHeaderLength + tcpHeaderLength + min(segmentPayloadSize, payloadLength) }

    /// The size of segment `index`.
    public func segmentSize(_ index: Int) -> Int {
        precondition(index >= 0 && index < segmentCount, "segment index out of range")
        return ipHeaderLength + tcpHeaderLength + min(segmentPayloadSize, payloadLength - index * segmentPayloadSize)
    }

    /// Writes segment `index` as a complete IP packet into `out` and returns its length.
    ///
    /// Precondition: `out.count >= segmentSize(index)`, and `out` does not overlap the input packet.
    public func writeSegment(_ index: Int, into out: UnsafeMutableRawBufferPointer) -> Int {
        let total = segmentSize(index)
        precondition(out.count >= total, "output buffer too small for the segment")
        let headers = ipHeaderLength + tcpHeaderLength
        let offset = index * segmentPayloadSize
        let size = total - headers
        let src = packet.baseAddress!
        let seg = UnsafeMutableRawBufferPointer(start: out.baseAddress!, count: total)
        seg.baseAddress!.copyMemory(from: src, byteCount: headers)
        (seg.baseAddress! + headers).copyMemory(from: src + headers + offset, byteCount: size)

        if isIPv6 {
            seg.storeBigEndian(UInt16(truncatingIfNeeded: tcpHeaderLength + size), at: 4)
        } else {
            seg.storeBigEndian(UInt16(truncatingIfNeeded: total), at: 2)
            seg.storeBigEndian(packet.bigEndianUInt16(at: 4) &+ UInt16(truncatingIfNeeded: index), at: 4)
            seg.storeBigEndian(UInt16(0), at: 10)
            let sum = InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: seg[0..<ipHeaderLength]))
            seg.storeBigEndian(~InternetChecksum.fold(sum), at: 10)
        }

        let tcp = ipHeaderLength
        seg.storeBigEndian(packet.bigEndianUInt32(at: tcp + 4) &+ UInt32(truncatingIfNeeded: offset), at: tcp + 4)
        var flags = packet[tcp + 13]
        if index != segmentCount - 1 { flags &= ~(TCPFlag.fin | TCPFlag.psh) }
        if index != 0 { flags &= ~TCPFlag.cwr }
        seg[tcp + 13] = flags
        seg.storeBigEndian(UInt16(0), at: tcp + 16)
        let written = UnsafeRawBufferPointer(seg)
        let pseudo = InternetChecksum.pseudoHeaderSum(ipPacket: written, protocol: 6, length: total - tcp)
        let sum = InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: written[tcp...]), initial: pseudo)
        seg.storeBigEndian(~InternetChecksum.fold(sum), at: tcp + 16)
        return total
    }
}
