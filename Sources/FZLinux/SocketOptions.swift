import CFZLinux

/// Probes and setters for UDP offloads, for the send/receive paths that will batch with them.
///
/// - GSO (`UDP_SEGMENT`, Linux 4.18): one `sendmsg` of up to 64 KiB that the kernel splits into
///   equal-sized datagrams to one destination; coturn measured nearly double the outbound packet rate.
/// - GRO (`UDP_GRO`, Linux 5.0): the kernel may coalesce datagrams of one flow into one read, with a
///   `UDP_GRO` control message carrying the segment size; the reader must split them again.
public enum SocketOptions {
    /// Whether this kernel accepts `UDP_SEGMENT` (probed once, on a throwaway socket).
    public static let supportsUDPSegment: Bool = cfz_supports_udp_segment()
    /// Whether this kernel accepts `UDP_GRO` (probed once, on a throwaway socket).
    public static let supportsUDPGRO: Bool = cfz_supports_udp_gro()

    /// Sets a socket-wide GSO segment size (0 turns it off). Every send on the socket is then split
    /// into datagrams of `size` bytes (the last one may be shorter).
    public static func setUDPSegment(_ socket: UDPSocket, size: Int) throws(SystemError) {
        try UDPSocket.setOption(socket.fd, CFZ_SOL_UDP, CFZ_UDP_SEGMENT, Int32(clamping: size), "setsockopt(UDP_SEGMENT)")
    }

    /// Turns GRO on or off. Only enable it on a socket whose reader parses the `UDP_GRO` control message.
    public static func setUDPGRO(_ socket: UDPSocket, enabled: Bool) throws(SystemError) {
        try UDPSocket.setOption(socket.fd, CFZ_SOL_UDP, CFZ_UDP_GRO, enabled ? 1 : 0, "setsockopt(UDP_GRO)")
    }
}
