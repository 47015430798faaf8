import Tunnel
import WireGuard

/// What the data plane counted, as its loop thread published it (once a second): the tunnel's
/// own counters, the WireGuard device's drops, and one entry per peer.
public struct TunnelSnapshot: Sendable, Equatable {
    public struct PeerEntry: Sendable, Equatable {
        public var publicKey: String
        public var stats: PeerStatistics
        /// Unix time of the last completed handshake (nil: none yet), as wg(8) `latest-handshake`.
        public var lastHandshakeUnixSeconds: Double?
        /// `roaming`, `direct` or `relayed`: where its datagrams go.
        public var path = "roaming"
    }

    public var counters = TunnelCounters()
    public var udpSendDropped: UInt64 = 0
    public var deviceDropped = DropCounters()
    public var cookieRepliesSent: UInt64 = 0
    public var underLoad = false
    public var peers: [PeerEntry] = []

    public init() {}
}
