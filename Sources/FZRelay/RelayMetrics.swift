import Metrics
import Prometheus
import TURN

/// The relay's metrics, recorded through swift-metrics into a Prometheus registry. The TURN
/// state machine only counts; once a second the loop thread publishes the deltas here.
final class RelayMetrics: @unchecked Sendable {
    // @unchecked: `last` is touched only by `publish`, which runs on the loop thread; the metric
    // objects themselves are thread-safe.
    let registry: PrometheusCollectorRegistry
    private let counters: [(KeyPath<ServerStats, UInt64>, Metrics.Counter)]
    private var last = ServerStats()
    private let allocations = Metrics.Gauge(label: "fz_relay_allocations")
    private let relaySockets = Metrics.Gauge(label: "fz_relay_relayed_sockets")
    private let sendDropped = Metrics.Gauge(label: "fz_relay_send_dropped")
    private let truncated = Metrics.Gauge(label: "fz_relay_truncated_dropped")

    init(registry: PrometheusCollectorRegistry) {
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
    }

    func publish(_ stats: ServerStats, allocations: Int, relaySockets: Int, sendDropped: UInt64, truncated: UInt64) {
        for (path, counter) in counters {
            let delta = stats[keyPath: path] &- last[keyPath: path]
            if delta > 0 { counter.increment(by: Int64(clamping: delta)) }
        }
        last = stats
        self.allocations.record(allocations)
        self.relaySockets.record(relaySockets)
        self.sendDropped.record(Int64(clamping: sendDropped))
        self.truncated.record(Int64(clamping: truncated))
    }

    func render() -> String { registry.emitToString() }
}
