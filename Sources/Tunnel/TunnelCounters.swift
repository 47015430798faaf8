/// What the tunnel data plane did with packets outside the WireGuard core's own counters (which count
/// protocol drops per peer and per device). Plain integers, touched only by the loop thread.
public struct TunnelCounters: Sendable, Equatable {
    /// Reads from the TUN interface (with offloads one read may be a TSO segment of many packets:
    /// see `tunSegmentsCut`).
    public var tunPacketsRead: UInt64 = 0
    /// Writes of decrypted packets to the TUN interface (with offloads one write may carry a
    /// coalesced run: see `tunSuperPacketsWritten`).
    public var tunPacketsWritten: UInt64 = 0
    /// Outgoing packets whose destination is in no peer's AllowedIPs.
    public var droppedNoRoute: UInt64 = 0
    /// Outgoing packets too short or not IPv4/IPv6.
    public var droppedMalformedOutgoing: UInt64 = 0
    /// Datagrams for a peer whose endpoint is not known yet (no Endpoint, never heard from).
    public var droppedNoEndpoint: UInt64 = 0
    /// Decrypted packets whose inner source is not in the sending peer's AllowedIPs (§2).
    public var droppedSourceNotAllowed: UInt64 = 0
    /// Decrypted packets that are not a well-formed IPv4/IPv6 header.
    public var droppedMalformedIncoming: UInt64 = 0
    /// Packets the TUN interface refused (queue full, or rejected).
    public var droppedTunWrite: UInt64 = 0
    /// Datagrams longer than the receive buffer.
    public var droppedTruncated: UInt64 = 0
    /// Datagrams for the other address family than any bound socket.
    public var droppedNoSocket: UInt64 = 0
    /// Handshake initiations and responses with a valid MAC1 (the work the load monitor counts).
    public var handshakeMessagesReceived: UInt64 = 0
    /// With TUN offloads: TSO segments read and the packets cut from them; coalesced (GSO) writes.
    public var tunSuperPacketsRead: UInt64 = 0
    public var tunSegmentsCut: UInt64 = 0
    public var tunSuperPacketsWritten: UInt64 = 0
    /// Decrypted packets the sending peer's packet filter refused (destination, protocol or port).
    public var droppedFiltered: UInt64 = 0
    /// Non-WireGuard datagrams (STUN, unclaimed ChannelData) while no connectivity engine listens.
    public var droppedNotWireGuard: UInt64 = 0
    /// ChannelData on a relayed peer's channel whose length field exceeds the datagram.
    public var droppedMalformedChannelData: UInt64 = 0
    /// WireGuard messages received and sent through a TURN relay as ChannelData.
    public var channelDataReceived: UInt64 = 0
    public var channelDataSent: UInt64 = 0
    /// Datagrams handed to the connectivity engine (ICE checks, TURN responses...).
    public var connectivityDatagrams: UInt64 = 0
    /// Times the gateway went under load (§5.3), and the total time it spent there.
    public var underLoadEpisodes: UInt64 = 0
    public var underLoadNanoseconds: UInt64 = 0

    public init() {}

    public var summary: String {
        "tun_read=\(tunPacketsRead) tun_written=\(tunPacketsWritten) no_route=\(droppedNoRoute) "
            + "malformed_out=\(droppedMalformedOutgoing) no_endpoint=\(droppedNoEndpoint) "
            + "source_not_allowed=\(droppedSourceNotAllowed) malformed_in=\(droppedMalformedIncoming) "
            + "tun_write_dropped=\(droppedTunWrite) truncated=\(droppedTruncated) no_socket=\(droppedNoSocket) "
            + "handshake_messages=\(handshakeMessagesReceived) under_load_episodes=\(underLoadEpisodes) "
            + "under_load_ms=\(underLoadNanoseconds / 1_000_000) tso_read=\(tunSuperPacketsRead) "
            + "tso_segments=\(tunSegmentsCut) gso_written=\(tunSuperPacketsWritten) filtered=\(droppedFiltered) "
            + "not_wireguard=\(droppedNotWireGuard) channel_data_in=\(channelDataReceived) "
            + "channel_data_out=\(channelDataSent) connectivity=\(connectivityDatagrams)"
    }
}
