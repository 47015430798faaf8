import Connectivity
import FZCore
import Prometheus
import FZTunnel
import Synchronization
import Tunnel
import WireGuard

/// The gateway's `/metrics` (`--metrics-listen`): the loop thread hands over a snapshot, the HTTP
/// side renders it in Prometheus text format. Rendering builds a fresh registry from the latest
/// snapshot, so a removed peer's series disappear with it and the loop thread never touches a
/// metrics object (nothing on the data path).
public final class GatewayMetrics: Sendable {
    private let latest = Mutex(TunnelSnapshot())
    /// Portal mode: the connectivity engine's relays and counters (`ConnectivityDriver.relays`).
    private let connectivity: (@Sendable () -> (relays: [NodeRelayStatus], stats: NodeStats))?

    public init(connectivity: (@Sendable () -> (relays: [NodeRelayStatus], stats: NodeStats))? = nil) {
        self.connectivity = connectivity
    }

    public func publish(_ snapshot: TunnelSnapshot) { latest.withLock { $0 = snapshot } }

    public var snapshot: TunnelSnapshot { latest.withLock { $0 } }

    public func render() -> String { Self.render(self.snapshot, connectivity: connectivity?()) }

    static var counterFields: [(KeyPath<TunnelCounters, UInt64>, String, String)] {[
        (\.tunPacketsRead, "tun_reads", "Reads from the TUN interface (one may be a TSO segment of many packets)."),
        (\.tunPacketsWritten, "tun_writes", "Writes of decrypted packets to the TUN interface (one may be a coalesced run)."),
        (\.tunSuperPacketsRead, "tso_reads", "TUN reads that were TSO segments."),
        (\.tunSegmentsCut, "tso_segments", "Packets cut from TSO segments."),
        (\.tunSuperPacketsWritten, "gso_writes", "Coalesced (GSO) TUN writes."),
        (\.handshakeMessagesReceived, "handshake_messages", "Handshake messages with a valid MAC1."),
        (\.underLoadEpisodes, "under_load_episodes", "Times the gateway went under handshake load (cookies required)."),
        (\.channelDataReceived, "channel_data_received", "WireGuard messages received through a TURN relay (ChannelData)."),
        (\.channelDataSent, "channel_data_sent", "WireGuard messages sent through a TURN relay (ChannelData)."),
        (\.connectivityDatagrams, "connectivity_datagrams", "STUN and unclaimed ChannelData handed to the connectivity engine."),
    ]}

    static var dropFields: [(KeyPath<TunnelCounters, UInt64>, String)] {[
        (\.droppedNoRoute, "no_route"), (\.droppedMalformedOutgoing, "malformed_outgoing"),
        (\.droppedNoEndpoint, "no_endpoint"), (\.droppedSourceNotAllowed, "source_not_allowed"),
        (\.droppedMalformedIncoming, "malformed_incoming"), (\.droppedTunWrite, "tun_write"),
        (\.droppedTruncated, "truncated"), (\.droppedNoSocket, "no_socket"),
        (\.droppedFiltered, "filtered"), (\.droppedNotWireGuard, "not_wireguard"),
        (\.droppedMalformedChannelData, "malformed_channel_data"),
    ]}

    static func render(_ s: TunnelSnapshot, connectivity: (relays: [NodeRelayStatus], stats: NodeStats)? = nil) -> String {
        let r = PrometheusCollectorRegistry()
        func name(_ base: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "fz", subsystem: "gateway", metricName: base, unitName: unit, helpText: help)
        }
        func counter(_ base: String, _ value: UInt64, _ labels: [(String, String)] = [], help: String) {
            r.makeCounter(descriptor: name(base, "total", help), labels: labels).increment(by: Int64(clamping: value))
        }
        func gauge(_ base: String, unit: String = "", _ value: Double, _ labels: [(String, String)] = [], help: String) {
            r.makeGauge(descriptor: name(base, unit, help), labels: labels).set(to: value)
        }
        for (path, base, help) in counterFields { counter(base, s.counters[keyPath: path], help: help) }
        let dropHelp = "Packets the data plane dropped, by reason."
        for (path, reason) in dropFields { counter("dropped", s.counters[keyPath: path], [("reason", reason)], help: dropHelp) }
        counter("dropped", s.udpSendDropped, [("reason", "udp_send")], help: dropHelp)
        for reason in DropReason.allCases {
            counter("wireguard_dropped", s.deviceDropped[reason], [("reason", "\(reason)".replacingSpaces)],
                    help: "Datagrams the WireGuard core dropped, by reason.")
        }
        counter("cookie_replies", s.cookieRepliesSent, help: "Cookie replies sent under handshake load.")
        gauge("under_load", s.underLoad ? 1 : 0, help: "1 while the gateway requires cookies (handshake flood).")
        gauge("peers", Double(s.peers.count), help: "Configured WireGuard peers.")
        for p in s.peers {
            let key = [("public_key", p.publicKey)]
            counter("peer_received_bytes", p.stats.bytesReceived, key, help: "Transport bytes received from the peer.")
            counter("peer_sent_bytes", p.stats.bytesSent, key, help: "Transport bytes sent to the peer.")
            counter("peer_received_packets", p.stats.packetsReceived, key, help: "Packets received from the peer.")
            counter("peer_sent_packets", p.stats.packetsSent, key, help: "Packets sent to the peer.")
            counter("peer_handshakes", p.stats.handshakesCompleted, key, help: "Handshakes completed with the peer.")
            counter("peer_dropped", p.stats.dropped.total, key, help: "The peer's datagrams the WireGuard core dropped.")
            gauge("peer_last_handshake", unit: "seconds", p.lastHandshakeUnixSeconds ?? 0, key,
                  help: "Unix time of the last completed handshake with the peer (0: none yet).")
        }
        for kind in ["direct", "relayed", "roaming"] {
            gauge("paths", Double(s.peers.filter { $0.path == kind }.count), [("kind", kind)],
                  help: "Peers by where their datagrams go: direct (ICE), relayed (through a TURN relay) or roaming (no ICE path).")
        }
        if let c = connectivity {
            for relay in c.relays {
                let labels = [("relay", relay.name)]
                gauge("relay_rtt", unit: "seconds", relay.rtt.map { Double($0.components.attoseconds) / 1e18 + Double($0.components.seconds) } ?? 0,
                      labels, help: "Median STUN Binding round trip to the relay (0: not measured yet).")
                gauge("relay_reachable", relay.reachable ? 1 : 0, labels, help: "1 while the relay answers its probes.")
                gauge("relay_allocated", relay.relayed == nil ? 0 : 1, labels, help: "1 while the gateway holds an allocation on the relay.")
            }
            let st = c.stats
            counter("relay_allocations", st.allocationsMade, help: "TURN allocations made on relays.")
            counter("relay_allocations_lost", st.allocationsLost, help: "TURN allocations lost (relay dead, expired, or 437).")
            counter("address_changes", st.addressChanges, help: "437 answers: a relay lost our 5-tuple (it restarted, or our address changed).")
            counter("probes", st.probesSent, help: "STUN Binding probes sent to relays.")
            counter("probes_timed_out", st.probesTimedOut, help: "Relay probes that went unanswered.")
        }
        return r.emitToString()
    }
}

extension String {
    /// `invalid MAC1` → `invalid_mac1`: a label value in the style of the other reasons.
    fileprivate var replacingSpaces: String { lowercased().split(separator: " ").joined(separator: "_") }
}
