import FZControl
import Prometheus

/// What the portal records for `/metrics`: intents by outcome and their latency, connected peers
/// by kind, presence pushes, refused registrations and connections.
public struct PortalMetrics: Sendable {
    let granted: Counter
    let denied: [DenialReason: Counter]
    let intentLatency: DurationHistogram
    let peers: [PeerRole: Gauge]
    let presencePushes: Counter
    let registrationsRefused: [String: Counter]

    public init(registry: PrometheusCollectorRegistry) {
        let intents = "fz_portal_intents_total"
        let intentsHelp = "Connection intents (request_access) by outcome"
        granted = registry.makeCounter(name: intents, labels: [("result", "granted")], help: intentsHelp)
        var denied: [DenialReason: Counter] = [:]
        for r in [DenialReason.forbidden, .notFound, .offline] {
            denied[r] = registry.makeCounter(name: intents, labels: [("result", r.rawValue)], help: intentsHelp)
        }
        self.denied = denied
        intentLatency = registry.makeDurationHistogram(
            name: "fz_portal_intent_duration_seconds",
            buckets: [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(50),
                      .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(10)],
            help: "From request_access to access_granted or access_denied")
        var peers: [PeerRole: Gauge] = [:]
        for role in PeerRole.allCases {
            peers[role] = registry.makeGauge(name: "fz_portal_connected_peers", labels: [("kind", role.rawValue)], help: "Connected peers by kind")
        }
        self.peers = peers
        presencePushes = registry.makeCounter(name: "fz_portal_presence_pushes_total", help: "presence messages sent to peers")
        var refused: [String: Counter] = [:]
        for reason in ["conflict", "limit", "failed"] {
            refused[reason] = registry.makeCounter(
                name: "fz_portal_registrations_refused_total", labels: [("reason", reason)],
                help: "Control channel registrations refused: conflict (key connected), limit (per token), failed (storage)")
        }
        registrationsRefused = refused
    }

    func intent(_ outcome: DenialReason?, since start: ContinuousClock.Instant?) {
        if let outcome { denied[outcome]?.increment() } else { granted.increment() }
        if let start { intentLatency.record(ContinuousClock.now - start) }
    }

    func refused(_ reason: String) { registrationsRefused[reason]?.increment() }
}
