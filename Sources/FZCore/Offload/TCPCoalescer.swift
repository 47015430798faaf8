/// Merges consecutive TCP segments of one flow into one large segment for a TUN device with
/// `IFF_VNET_HDR`, so the kernel's TCP stack takes one packet instead of dozens: what GRO does for a
/// NIC (`tcp_gro_receive`, net/ipv4/tcp_offload.c), done before the write instead of after a read.
///
/// A merged run is written with GSO type TCPv4/TCPv6 and `VIRTIO_NET_HDR_F_NEEDS_CSUM`
/// (`virtio_net_hdr_to_skb`, include/linux/virtio_net.h, turns that into `CHECKSUM_PARTIAL`), so its
/// TCP checksum field holds only the pseudo-header sum and the kernel never verifies the data.
/// That is why every segment's own checksum is verified here before it joins a run.
///
/// The coalescer holds one run at a time, in one buffer allocated in `init`: a segment either
/// continues the run or ends it. Segments arrive in order from one WireGuard peer in practice, so a
/// single run catches nearly everything a flow table would, without per-packet lookups.
public struct TCPCoalescer: ~Copyable {
    /// The run being built: the first segment's headers followed by every segment's payload.
    private struct Run {
        var isIPv6: Bool
        var ipHeaderLength: Int
        var tcpHeaderLength: Int
        /// Bytes in the buffer.
        var length: Int
        var segments: Int
        /// The first segment's payload size; every segment but the last carries exactly this much.
        var gsoSize: Int
        var nextSequence: UInt32
        /// The last segment had PSH.
        var pushed: Bool
        /// A short or PSH segment ended the run: nothing may follow it.
        var closed: Bool
    }

    /// A TCP segment that may start or continue a run.
    private struct Segment {
        var isIPv6: Bool
        var ipHeaderLength: Int
        var tcpHeaderLength: Int
        /// The IP packet's own length, which excludes any padding after it.
        var length: Int
        var sequence: UInt32
        var pushed: Bool

        var headerLength: Int { ipHeaderLength + tcpHeaderLength }
        var payloadLength: Int { length - headerLength }
    }

    private let buffer: UnsafeMutableRawBufferPointer
    private var run: Run?
    /// The largest merged IP packet, in bytes.
    public let capacity: Int
    /// Segments absorbed into a run after its first.
    public private(set) var coalescedPackets: UInt64 = 0
    /// Runs of more than one segment emitted.
    public private(set) var superPackets: UInt64 = 0

    /// `capacity`: the largest merged IP packet, at most 65535 (the IPv4 total length; an IPv6
    /// payload length would allow 40 bytes more, which is not worth a second limit).
    public init(capacity: Int = 65535) {
        precondition(capacity > 0 && capacity <= 65535, "capacity must be 1...65535")
        self.capacity = capacity
        buffer = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit { buffer.deallocate() }

    /// Takes one decrypted IP packet and calls `emit` zero or more times with complete TUN writes:
    /// the virtio header and the IP packet, whose bytes are valid only during the call.
    ///
    /// A packet that cannot join a run (not TCP, IPv4 options or fragments, IPv6 extension headers,
    /// flags other than ACK and PSH, no payload, a bad IPv4 header or TCP checksum) ends the current
    /// run and is passed on as it is with `VirtioNetHeader.none`; the kernel checks it itself. A
    /// segment that could start a run but does not continue the current one ends it and starts the
    /// next.
    public mutating func push(_ packet: UnsafeRawBufferPointer, emit: (VirtioNetHeader, UnsafeRawBufferPointer) -> Void) {
        guard let segment = Self.parse(packet) else {
            flush(emit: emit)
            emit(.none, packet)
            return
        }
        if let current = run, continues(current, with: segment, packet) {
            append(segment, packet)
            return
        }
        flush(emit: emit)
        guard segment.length <= capacity else {
            emit(.none, packet)
            return
        }
        buffer.baseAddress!.copyMemory(from: packet.baseAddress!, byteCount: segment.length)
        run = Run(
            isIPv6: segment.isIPv6, ipHeaderLength: segment.ipHeaderLength, tcpHeaderLength: segment.tcpHeaderLength,
            length: segment.length, segments: 1, gsoSize: segment.payloadLength,
            nextSequence: segment.sequence &+ UInt32(truncatingIfNeeded: segment.payloadLength),
            pushed: segment.pushed, closed: segment.pushed)
    }

    /// Emits the current run, if any; call it at the end of each batch.
    ///
    /// A run of one segment goes out exactly as it came, with `VirtioNetHeader.none`. A longer run
    /// gets its IP length (and IPv4 header checksum) for the whole, PSH if its last segment had it,
    /// and the folded, uncomplemented pseudo-header sum in the TCP checksum field.
    public mutating func flush(emit: (VirtioNetHeader, UnsafeRawBufferPointer) -> Void) {
        guard let r = run else { return }
        run = nil
        let merged = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<r.length])
        guard r.segments > 1 else {
            emit(.none, UnsafeRawBufferPointer(merged))
            return
        }
        let tcp = r.ipHeaderLength
        if r.isIPv6 {
            merged.storeBigEndian(UInt16(truncatingIfNeeded: r.length - 40), at: 4)
        } else {
            merged.storeBigEndian(UInt16(truncatingIfNeeded: r.length), at: 2)
            merged.storeBigEndian(UInt16(0), at: 10)
            let sum = InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: merged[0..<tcp]))
            merged.storeBigEndian(~InternetChecksum.fold(sum), at: 10)
        }
        if r.pushed { merged[tcp + 13] |= TCPFlag.psh }
        let pseudo = InternetChecksum.pseudoHeaderSum(
            ipPacket: UnsafeRawBufferPointer(merged), protocol: 6, length: r.length - tcp)
        merged.storeBigEndian(InternetChecksum.fold(pseudo), at: tcp + 16)
        let header = VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum,
            gsoType: r.isIPv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
            headerLength: UInt16(truncatingIfNeeded: r.ipHeaderLength + r.tcpHeaderLength),
            gsoSize: UInt16(truncatingIfNeeded: r.gsoSize),
            checksumStart: UInt16(truncatingIfNeeded: tcp),
            checksumOffset: 16)
        superPackets &+= 1
        emit(header, UnsafeRawBufferPointer(merged))
    }

    /// Whether `segment` (of `packet`) is the next segment of run `r` and fits: the same flow and
    /// the same header fields apart from the ones that differ between segments by design (IPv4
    /// identification and checksums, sequence number, PSH), following `tcp_gro_receive`.
    private func continues(_ r: Run, with segment: Segment, _ packet: UnsafeRawBufferPointer) -> Bool {
        guard !r.closed, segment.isIPv6 == r.isIPv6, segment.ipHeaderLength == r.ipHeaderLength,
            segment.tcpHeaderLength == r.tcpHeaderLength, segment.sequence == r.nextSequence,
            segment.payloadLength <= r.gsoSize, r.length + segment.payloadLength <= capacity
        else { return false }
        let first = UnsafeRawBufferPointer(buffer)
        if r.isIPv6 {
            // Version, traffic class and flow label; hop limit; addresses.
            guard first.sameBytes(as: packet, in: 0..<4), first[7] == packet[7],
                first.sameBytes(as: packet, in: 8..<40)
            else { return false }
        } else {
            // TOS, DF, TTL, addresses (protocol and IHL are already known equal).
            guard first[1] == packet[1], first[6] & 0x40 == packet[6] & 0x40, first[8] == packet[8],
                first.sameBytes(as: packet, in: 12..<20)
            else { return false }
        }
        let tcp = r.ipHeaderLength
        // Ports; acknowledgment number; window; options.
        return first.sameBytes(as: packet, in: tcp..<tcp + 4)
            && first.sameBytes(as: packet, in: tcp + 8..<tcp + 12)
            && first.sameBytes(as: packet, in: tcp + 14..<tcp + 16)
            && first.sameBytes(as: packet, in: tcp + 20..<tcp + r.tcpHeaderLength)
    }

    private mutating func append(_ segment: Segment, _ packet: UnsafeRawBufferPointer) {
        guard var r = run else { return }
        let payload = segment.payloadLength
        (buffer.baseAddress! + r.length).copyMemory(from: packet.baseAddress! + segment.headerLength, byteCount: payload)
        r.length += payload
        r.segments += 1
        r.nextSequence &+= UInt32(truncatingIfNeeded: payload)
        r.pushed = segment.pushed
        r.closed = segment.pushed || payload < r.gsoSize
        run = r
        coalescedPackets &+= 1
    }

    /// The segment in `packet` if it may take part in a run, with its IPv4 header and TCP checksums
    /// verified; nil otherwise. The IP length field, not the buffer, gives the packet's end, so
    /// padding after the packet (WireGuard pads plaintext to 16 bytes) is left out of a run.
    private static func parse(_ packet: UnsafeRawBufferPointer) -> Segment? {
        guard let first = packet.first else { return nil }
        let v6: Bool
        let ipLength: Int
        let length: Int
        switch first >> 4 {
        case 4:
            // IHL 5 (no options), TCP, neither MF nor a fragment offset.
            guard first == 0x45, packet.count >= 40, packet[9] == 6,
                packet.bigEndianUInt16(at: 6) & 0x3FFF == 0
            else { return nil }
            length = Int(packet.bigEndianUInt16(at: 2))
            guard length >= 40, length <= packet.count,
                InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: packet[0..<20]))) == 0xFFFF
            else { return nil }
            v6 = false
            ipLength = 20
        case 6:
            // TCP directly after the fixed header; a zero payload length would be a jumbogram.
            guard packet.count >= 60, packet[6] == 6 else { return nil }
            length = 40 + Int(packet.bigEndianUInt16(at: 4))
            guard length >= 60, length <= packet.count else { return nil }
            v6 = true
            ipLength = 40
        default:
            return nil
        }
        let tcpLength = Int(packet[ipLength + 12] >> 4) * 4
        // Data offset valid, reserved bits and AE clear, flags ACK or ACK|PSH, some payload.
        guard tcpLength >= 20, packet[ipLength + 12] & 0x0F == 0, ipLength + tcpLength < length,
            packet[ipLength + 13] & ~TCPFlag.psh == TCPFlag.ack
        else { return nil }
        let segmentBytes = UnsafeRawBufferPointer(rebasing: packet[0..<length])
        let pseudo = InternetChecksum.pseudoHeaderSum(ipPacket: segmentBytes, protocol: 6, length: length - ipLength)
        let sum = InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: segmentBytes[ipLength...]), initial: pseudo)
        guard InternetChecksum.fold(sum) == 0xFFFF else { return nil }
        return Segment(
            isIPv6: v6, ipHeaderLength: ipLength, tcpHeaderLength: tcpLength, length: length,
            sequence: packet.bigEndianUInt32(at: ipLength + 4), pushed: packet[ipLength + 13] & TCPFlag.psh != 0)
    }
}

// The coalescer is noncopyable and owns its buffer outright, so moving it to another thread moves
// the buffer with it.
extension TCPCoalescer: @unchecked Sendable {}
