import CFZLinux
import FZCore

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

    /// Sets the Don't Fragment bit on every datagram the socket sends (path MTU discovery "do"):
    /// what a TURN client asks for with DONT-FRAGMENT (RFC 8656 §7.2). Oversized sends then fail
    /// with EMSGSIZE instead of being fragmented.
    public static func setDontFragment(_ socket: UDPSocket) throws(SystemError) {
        switch socket.localAddress.family {
        case .v4:
            try UDPSocket.setOption(socket.fd, CFZ_IPPROTO_IP, CFZ_IP_MTU_DISCOVER, CFZ_IP_PMTUDISC_DO, "setsockopt(IP_MTU_DISCOVER)")
        case .v6:
            try UDPSocket.setOption(socket.fd, CFZ_IPPROTO_IPV6, CFZ_IPV6_MTU_DISCOVER, CFZ_IPV6_PMTUDISC_DO, "setsockopt(IPV6_MTU_DISCOVER)")
        }
    }

    /// The socket's path-MTU discovery mode (`IP_MTU_DISCOVER` / `IPV6_MTU_DISCOVER`).
    public static func mtuDiscoveryMode(_ socket: UDPSocket) throws(SystemError) -> Int32 {
        switch socket.localAddress.family {
        case .v4: try UDPSocket.getOption(socket.fd, CFZ_IPPROTO_IP, CFZ_IP_MTU_DISCOVER, "getsockopt(IP_MTU_DISCOVER)")
        case .v6: try UDPSocket.getOption(socket.fd, CFZ_IPPROTO_IPV6, CFZ_IPV6_MTU_DISCOVER, "getsockopt(IPV6_MTU_DISCOVER)")
        }
    }

    /// The value `setDontFragment` sets.
    public static var dontFragmentMode: Int32 { CFZ_IP_PMTUDISC_DO }
}
