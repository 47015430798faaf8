import FZCore
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

/// Readiness as `/readyz` reports it: set once the daemon serves, cleared when it stops.
public final class Readiness: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    public var isReady: Bool { flag.load(ordering: .acquiring) }
    public func set(_ ready: Bool) { flag.store(ready, ordering: .releasing) }
}

/// The operator endpoints every daemon offers (design.md "Daemons and their contracts"):
/// `/metrics` in Prometheus text format, `/healthz` (the process answers) and `/readyz` (it
/// serves: 200, else 503). Daemons with an HTTP server of their own add the routes to it
/// (`addRoutes`); the others run `service` on `--metrics-listen`.
public enum DaemonEndpoints {
    public static func addRoutes<Context: RequestContext>(
        to router: Router<Context>, readiness: Readiness, metrics: @escaping @Sendable () -> String
    ) {
        router.get("/metrics") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: metrics())))
        }
        router.get("/healthz") { _, _ -> String in "ok\n" }
        router.get("/readyz") { _, _ -> String in
            guard readiness.isReady else { throw HTTPError(.serviceUnavailable, message: "not ready") }
            return "ready\n"
        }
    }

    /// An HTTP server on `address` answering only the three endpoints.
    public static func service(
        address: SocketAddress, readiness: Readiness, logger: Logger, metrics: @escaping @Sendable () -> String
    ) -> some Service {
        let router = Router()
        addRoutes(to: router, readiness: readiness, metrics: metrics)
        return Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(address.ip.description, port: Int(address.port))),
            logger: logger)
    }
}
