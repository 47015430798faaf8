import FZControl
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import FZDaemon
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
        commandName: "fz-portal", abstract: "fz control plane: admin API, policies, presence.", subcommands: [
            Serve.self, SiteCommand.self, ResourceCommand.self, GroupCommand.self, ActorCommand.self, MembershipCommand.self,
            PolicyCommand.self, TokenCommand.self, GatewayCommand.self, RelayCommand.self, ClientCommand.self,
            AdminToken.self,
        ])

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

        @Option(help: "Log format: text or json (one object per line).")
        var logFormat: String = "text"

        @Option(help: "Seconds a new connection has to send its first request head (then it is closed).")
        var headerTimeout: Double = 10

        @Option(help: "Seconds an HTTP keep-alive connection may stay idle between requests.")
        var idleTimeout: Double = 60

        @Option(help: "Open connections allowed from one source address; more are closed at accept.")
        var maxConnectionsPerSource: Int = 256

        public init() {}

        var limits: HTTPLimits {
            HTTPLimits(
                headerTimeout: .milliseconds(Int64(headerTimeout * 1000)), idleTimeout: .milliseconds(Int64(idleTimeout * 1000)),
                maxConnectionsPerSource: maxConnectionsPerSource)
        }

        public func validate() throws {
            guard Self.parseListen(listen) != nil else {
                throw ValidationError("--listen must be ADDR:PORT (e.g. 127.0.0.1:8080, [::1]:8080), got \(listen)")
            }
            guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level '\(logLevel)'") }
            guard LogFormat(rawValue: logFormat) != nil else { throw ValidationError("--log-format: '\(logFormat)' is not text or json") }
            guard headerTimeout.isFinite, headerTimeout > 0, headerTimeout <= 3600 else {
                throw ValidationError("--header-timeout must be between 0 and 3600 seconds, got \(headerTimeout)")
            }
            guard idleTimeout.isFinite, idleTimeout > 0, idleTimeout <= 86400 else {
                throw ValidationError("--idle-timeout must be between 0 and 86400 seconds, got \(idleTimeout)")
            }
            guard maxConnectionsPerSource >= 1 else {
                throw ValidationError("--max-connections-per-source must be at least 1, got \(maxConnectionsPerSource)")
            }
            guard databaseUrl.hasPrefix("sqlite://"), databaseUrl.count > "sqlite://".count else {
                throw ValidationError("--database-url must be sqlite:///PATH, got \(databaseUrl)")
            }
        }

        /// The lock beside an SQLite database (`PATH.lock`); nil for other stores.
        static func lock(_ databaseUrl: String) throws -> FileLock? {
            guard case .sqlite(let path)? = try? DatabaseURL(parsing: databaseUrl) else { return nil }
            do {
                return try FileLock(path: path + ".lock")
            } catch {
                if FileLock.isHeldElsewhere(error) {
                    throw ValidationError("--database-url: \(databaseUrl) is in use by another fz-portal (it holds \(path).lock)")
                }
                throw ValidationError("--database-url: cannot lock \(path).lock: \(error)")
            }
        }

        static func parseListen(_ listen: String) -> (host: String, port: Int)? {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port)
            else { return nil }
            var host = String(listen[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { return nil }
            return (host, port)
        }

        public func run() async throws {
            guard let (host, port) = Self.parseListen(listen) else { throw ValidationError("--listen must be ADDR:PORT, got \(listen)") }
            (LogFormat(rawValue: logFormat) ?? .text).bootstrap()
            var log = Logger(label: "fz-portal")
            log.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            let logger = log
            let databaseUrl = self.databaseUrl

            // One serving portal per database: a second one would keep presence and connections
            // of its own, so a token revoked through one would keep its sessions on the other.
            let lock = try Self.lock(databaseUrl)
            defer { lock?.release() }
            let store: SQLiteStore
            do { store = try SQLiteStore(url: databaseUrl) } catch { throw ValidationError("--database-url: cannot open \(databaseUrl): \(error)") }
            let clock = WallClock.system

            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            let readiness = Readiness()
            let broker = Broker(store: store, clock: clock, metrics: PortalMetrics(registry: registry))
            let router = PortalApplication.router(store: store, clock: clock, readiness: readiness, registry: registry, broker: broker)
            // Room for many held sockets: the per-source limit and the timeouts bound what one
            // source can take, the descriptor limit what all of them can.
            ResourceLimits.raiseOpenFilesToHardLimit()
            let app = PortalApplication.application(router: router, host: host, port: port, logger: logger, limits: limits) { bound in
                // Only once the listener is up: a portal that cannot bind must not have printed
                // (and stored) a token nobody can use yet.
                do {
                    if let secret = try await PortalApplication.bootstrapAdminToken(store: store, now: clock.now()) {
                        print("Initial admin token (shown once, store it now): \(secret)")
                        fflush(nil)
                    }
                } catch {
                    logger.error("cannot create the initial admin token: \(error)")
                }
                readiness.set(true)
                SystemdNotifier.notify("READY=1\nSTATUS=listening on \(host):\(bound)")
                logger.notice("fz-portal ready", metadata: ["listen": "\(host):\(bound)", "database": "\(databaseUrl)"])
            }
            // Shut down in reverse order: the drain first (peers told to reconnect, 1001), then the
            // HTTP server; the watchdog pings until the end.
            var services: [any Service] = []
            services.append(WatchdogService(watchdog: Watchdog(loops: 0)))
            services.append(app)
            services.append(ControlDrainService(broker: broker, readiness: readiness, logger: logger))
            let group = ServiceGroup(
                configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }
    }
}

extension PortalCommand {
    /// Recovery from an admin lockout, on the portal's host: mints an admin token straight into
    /// the database (no running portal needed, and none is asked). Whoever can read the database
    /// file already holds every secret in it, so this grants nothing new.
    public struct AdminToken: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "admin-token", abstract: "Create an admin token directly in the database (lockout recovery); prints its secret once.")

        @Option(help: "Database: sqlite:///PATH (as given to serve).")
        var databaseUrl: String = "sqlite:///var/lib/fz/portal.sqlite"

        @Option(help: "A label for the token.")
        var name: String = "recovery admin"

        public init() {}

        public func run() async throws {
            guard case .sqlite(let path)? = try? DatabaseURL(parsing: databaseUrl) else {
                throw ValidationError("--database-url must be sqlite:///PATH, got \(databaseUrl)")
            }
            // An existing database only: creating a fresh one here would only hide a typo.
            guard access(path, R_OK | W_OK) == 0 else { throw ValidationError("--database-url: no database at \(path)") }
            let store: SQLiteStore
            do { store = try SQLiteStore(url: databaseUrl) } catch { throw ValidationError("--database-url: cannot open \(databaseUrl): \(error)") }
            let issued = try IssuedToken.issue(name: name, scope: .admin, subject: nil, now: WallClock.system.now())
            try await store.insert(token: issued.token)
            print(issued.secret.presented)
        }
    }
}

/// On graceful shutdown: not ready any more, `STOPPING=1`, every control channel peer told to
/// reconnect (and closed with 1001); waits up to 5 s for them to go before the server stops.
struct ControlDrainService: Service {
    let broker: Broker
    let readiness: Readiness
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        readiness.set(false)
        SystemdNotifier.notify("STOPPING=1")
        let peers = await broker.connectedPeers
        logger.notice("fz-portal stopping: telling control channel peers to reconnect", metadata: ["peers": "\(peers)"])
        await broker.goingAway()
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(5))
        while await broker.connectedPeers > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// The executable's entry point (keeps `fz-portal/main.swift` free of ArgumentParser).
public enum PortalMain {
    public static func run() async { await PortalCommand.main() }
}
