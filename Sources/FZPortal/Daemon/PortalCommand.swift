import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import FZLinux
import Hummingbird
import Logging
import Metrics
import Portal
import Prometheus
import ServiceLifecycle
import UnixSignals

/// `fz-portal`: the control plane.
public struct PortalCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fz-portal", abstract: "fz control plane: admin API, policies, presence.", subcommands: [Serve.self])

    public init() {}
}

extension PortalCommand {
    public struct Serve: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Run the portal (admin REST API, probes, metrics).")

        @Option(help: "Address and port to listen on (ADDR:PORT).")
        var listen: String = "127.0.0.1:8080"

        @Option(help: "Database: sqlite:///PATH (created and migrated on start).")
        var databaseUrl: String = "sqlite:///var/lib/fz/portal.sqlite"

        @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
        var logLevel: String = "info"

        public init() {}

        public func run() async throws {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port)
            else { throw ValidationError("--listen must be ADDR:PORT, got \(listen)") }
            var hostText = String(listen[..<colon])
            if hostText.hasPrefix("[") && hostText.hasSuffix("]") { hostText = String(hostText.dropFirst().dropLast()) }
            let host = hostText
            var log = Logger(label: "fz-portal")
            log.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            let logger = log
            let databaseUrl = self.databaseUrl

            let store: SQLiteStore
            do { store = try SQLiteStore(url: databaseUrl) } catch { throw ValidationError("cannot open \(databaseUrl): \(error)") }
            let clock = WallClock.system
            if let secret = try await PortalApplication.bootstrapAdminToken(store: store, now: clock.now()) {
                print("Initial admin token (shown once, store it now): \(secret)")
                fflush(nil)
            }

            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            let readiness = Readiness()
            let router = PortalApplication.router(store: store, clock: clock, readiness: readiness, registry: registry)
            let app = PortalApplication.application(router: router, host: host, port: port, logger: logger) { bound in
                readiness.set(true)
                SystemdNotifier.notify("READY=1\nSTATUS=listening on \(host):\(bound)")
                logger.notice("fz-portal ready", metadata: ["listen": "\(host):\(bound)", "database": "\(databaseUrl)"])
            }
            let group = ServiceGroup(
                configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
            readiness.set(false)
            SystemdNotifier.notify("STOPPING=1")
        }
    }
}

/// The executable's entry point (keeps `fz-portal/main.swift` free of ArgumentParser).
public enum PortalMain {
    public static func run() async { await PortalCommand.main() }
}
