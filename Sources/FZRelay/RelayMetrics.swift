import Metrics
import Prometheus
import TURN

/// The relay's metrics, recorded through swift-metrics into a Prometheus registry. The TURN
/// state machine only counts; once a second the loop thread publishes the deltas here.
final class RelayMetrics: @unchecked Sendable {
    // @unchecked: `last[i]` is touched only by `publish(shard: i)`, which runs on shard i's loop
    // thread; the metric objects themselves are thread-safe.
    let registry: PrometheusCollectorRegistry
    private let counters: [(KeyPath<ServerStats, UInt64>, Metrics.Counter)]
    private var last: [ServerStats]
    private var lastHandedOver: [UInt64]
    private let allocations: [Metrics.Gauge]
    private let relaySockets: [Metrics.Gauge]
    private let sendDropped: [Metrics.Gauge]
    private let truncated: [Metrics.Gauge]
    private let groDatagrams: [Metrics.Gauge]
    private let gsoDatagrams: [Metrics.Gauge]
    private let handedOver = Metrics.Counter(label: "fz_relay_handed_over_total")

    init(registry: PrometheusCollectorRegistry, shards: Int) {
        last = Array(repeating: ServerStats(), count: shards)
        lastHandedOver = Array(repeating: 0, count: shards)
        func gauges(_ name: String) -> [Metrics.Gauge] {
            (0..<shards).map { Metrics.Gauge(label: name, dimensions: [("thread", "\($0)")]) }
        }
        allocations = gauges("fz_relay_allocations")
        relaySockets = gauges("fz_relay_relayed_sockets")
        sendDropped = gauges("fz_relay_send_dropped")
        truncated = gauges("fz_relay_truncated_dropped")
        // Datagrams that arrived inside UDP GRO reads / left inside UDP GSO messages.
        groDatagrams = gauges("fz_relay_gro_datagrams")
        gsoDatagrams = gauges("fz_relay_gso_datagrams")
        self.registry = registry
        let names: [(KeyPath<ServerStats, UInt64>, String)] = [
            (\.allocationsCreated, "allocations_created"), (\.allocationsDeleted, "allocations_deleted"),
            (\.allocationsExpired, "allocations_expired"), (\.permissionsCreated, "permissions_created"),
            (\.channelsBound, "channels_bound"), (\.bindingRequests, "binding_requests"),
            (\.challenges, "challenges"), (\.staleNonces, "stale_nonces"), (\.authFailures, "auth_failures"),
            (\.rateLimited, "rate_limited"), (\.errorResponses, "error_responses"),
            (\.malformedDropped, "malformed_dropped"), (\.unexpectedDropped, "unexpected_dropped"),
            (\.peerDenied, "peer_denied"), (\.noPermissionDropped, "no_permission_dropped"),
            (\.noAllocationDropped, "no_allocation_dropped"), (\.oversizeDropped, "oversize_dropped"), (\.channelDataIn, "channel_data_in"),
            (\.sendIndicationsIn, "send_indications_in"), (\.peerPacketsIn, "peer_packets_in"),
            (\.relayedBytesToPeers, "relayed_bytes_to_peers"), (\.relayedBytesToClients, "relayed_bytes_to_clients"),
        ]
        counters = names.map { ($0.0, Metrics.Counter(label: "fz_relay_\($0.1)_total")) }
        streams = (0..<shards).map { StreamGauges(thread: $0) }
    }

    func publish(shard i: Int, _ stats: ServerStats, allocations: Int, relaySockets: Int, sendDropped: UInt64,
                 truncated: UInt64, handedOver: UInt64, groDatagrams: UInt64, gsoDatagrams: Int) {
        for (path, counter) in counters {
            let delta = stats[keyPath: path] &- last[i][keyPath: path]
            if delta > 0 { counter.increment(by: Int64(clamping: delta)) }
        }
        last[i] = stats
        if handedOver > lastHandedOver[i] { self.handedOver.increment(by: Int64(clamping: handedOver - lastHandedOver[i])) }
        lastHandedOver[i] = handedOver
        self.allocations[i].record(allocations)
        self.relaySockets[i].record(relaySockets)
        self.sendDropped[i].record(Int64(clamping: sendDropped))
        self.truncated[i].record(Int64(clamping: truncated))
        self.groDatagrams[i].record(Int64(clamping: groDatagrams))
        self.gsoDatagrams[i].record(gsoDatagrams)
    }

    private struct StreamGauges {
        let open, accepted, droppedMessages, droppedBytes, acceptFailures: Metrics.Gauge
        let closed: [Metrics.Gauge]
        init(thread i: Int) {
            let t = ("thread", "\(i)")
            open = Metrics.Gauge(label: "fz_relay_tcp_connections", dimensions: [t])
            accepted = Metrics.Gauge(label: "fz_relay_tcp_accepted", dimensions: [t])
            droppedMessages = Metrics.Gauge(label: "fz_relay_tcp_dropped_messages", dimensions: [t])
            droppedBytes = Metrics.Gauge(label: "fz_relay_tcp_dropped_bytes", dimensions: [t])
            acceptFailures = Metrics.Gauge(label: "fz_relay_tcp_accept_failures", dimensions: [t])
            closed = StreamCloseReason.allCases.map { Metrics.Gauge(label: "fz_relay_tcp_closed", dimensions: [t, ("reason", $0.label)]) }
        }
    }

    private let streams: [StreamGauges]

    /// TCP clients of shard `i`: open connections, accepted, closed by reason, output drops.
    func publishStreams(shard i: Int, _ c: StreamCounters, open: Int) {
        let g = streams[i]
        g.open.record(open)
        g.accepted.record(Int64(clamping: c.accepted))
        for (n, gauge) in zip(c.closed, g.closed) { gauge.record(Int64(clamping: n)) }
        g.droppedMessages.record(Int64(clamping: c.droppedMessages))
        g.droppedBytes.record(Int64(clamping: c.droppedBytes))
        g.acceptFailures.record(Int64(clamping: c.acceptFailures))
    }

    func render() -> String { registry.emitToString() }
}
