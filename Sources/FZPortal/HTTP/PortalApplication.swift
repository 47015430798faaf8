import FZControl
import FZDaemon
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import Portal
import Prometheus
import Synchronization

/// Builds the portal's HTTP surface: probes, metrics, admin API and the control channel.
public enum PortalApplication {
    public static func router(
        store: any PortalStore, clock: WallClock, readiness: Readiness, registry: PrometheusCollectorRegistry,
        broker: Broker? = nil, control: ControlConfiguration = ControlConfiguration()
    ) -> Router<PortalContext> {
        let broker = broker ?? Broker(store: store, clock: clock, config: control, metrics: PortalMetrics(registry: registry))
        let router = Router(context: PortalContext.self)
        // Every refusal, the framework's too (404, 413), answers the API's JSON error.
        router.add(middleware: APIErrorMiddleware())
        // `/readyz`: ready once migrations ran and the listener is up.
        DaemonEndpoints.addRoutes(to: router, readiness: readiness) { registry.emitToString() }
        let authenticator = TokenAuthenticator(store: store, clock: clock)
        AdminAPI(
            store: store, clock: clock, policiesRemoved: { await broker.policiesRemoved($0) }, changed: { await broker.adminChanged() },
            tokenRevoked: { await broker.tokenRevoked($0) })
            .register(on: router, authenticator: authenticator)
        ControlChannel(authenticator: authenticator, broker: broker, config: control).register(on: router)
        return router
    }

    public static func application(
        router: Router<PortalContext>, host: String, port: Int, logger: Logger, control: ControlConfiguration = ControlConfiguration(),
        limits: HTTPLimits = HTTPLimits(), onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        // Frames may be larger than the message limit, so an oversized message gets a JSON
        // `error` before the close rather than a bare protocol close.
        let ws = WebSocketServerConfiguration(
            maxFrameSize: max(1 << 16, control.maxMessageBytes * 2), autoPing: .enabled(timePeriod: control.heartbeat),
            validateUTF8: true)
        let http1 = HTTP1Channel.Configuration(
            idleTimeout: TimeAmount(limits.idleTimeout),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: limits.maxHeaderBytes, maxHeaderListSize: limits.maxHeaderBytes))
        return Application(
            router: router,
            server: GuardedChannel.builder(router: router, configuration: .init(http1: http1, ws: ws), limits: limits),
            // A deep accept queue: bursts of connections (a fleet reconnecting after a portal
            // restart) wait in the kernel instead of being dropped into 1 s SYN retransmits.
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "fz-portal", backlog: 4096),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    /// On a database without a usable admin token, issues one and returns its secret (printed
    /// once by `serve`); nil when an admin token can still be used.
    public static func bootstrapAdminToken(store: any PortalStore, now: UnixTime) async throws -> String? {
        guard try await store.adminTokenCount(now: now) == 0 else { return nil }
        let issued = try IssuedToken.issue(name: "initial admin", scope: .admin, subject: nil, now: now)
        try await store.insert(token: issued.token)
        return issued.secret.presented
    }
}
