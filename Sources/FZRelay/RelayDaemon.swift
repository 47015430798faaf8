import FZCore
import FZLinux
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization
import TURN
import UnixSignals

/// Wires the relay together: sockets and the TURN machine on a dedicated event-loop thread, the
/// optional metrics endpoint and signal handling as services in one ServiceGroup.
struct RelayDaemon {
    let settings: RelaySettings
    let logger: Logger

    func run() async throws {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let metrics = RelayMetrics(registry: registry)
        let health = HealthState()

        let loop: EventLoop
        let runtime: RelayRuntime
        do {
            loop = try EventLoop()
            runtime = try RelayRuntime(settings: settings, loop: loop, logger: logger, metrics: metrics)
            try runtime.register()
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitError(message: "fz-relay: cannot start: \(error)")
        }
        runtime.watchdogInterval = SystemdNotifier.watchdogInterval
        let confined = LoopConfined(runtime)
        let listening = runtime.listeningAddresses.map(\.description).sorted().joined(separator: ", ")
        let relayIPs = settings.relayAddresses.map { "\($0.bind)" + ($0.advertised != $0.bind ? " (as \($0.advertised))" : "") }
        // Readiness is declared from inside the loop, so READY=1 means the sockets are being served.
        loop.execute {
            health.ready.store(true, ordering: .releasing)
            SystemdNotifier.notify("READY=1\nSTATUS=listening on \(listening)")
            confined.value.logger.notice("fz-relay ready", metadata: [
                "listening": "\(listening)", "relay-ip": "\(relayIPs.joined(separator: ", "))",
                "ports": "\(settings.portRange.lowerBound)-\(settings.portRange.upperBound)", "realm": "\(settings.realm)",
            ])
        }
        let thread = try loop.start(name: "fz-relay-loop")

        var services: [any Service] = [
            LoopService(loop: loop, thread: thread, runtime: confined, health: health, logger: logger),
            ReloadService(settings: settings, loop: loop, runtime: confined, logger: logger),
        ]
        if let address = settings.metricsListen {
            services.append(MetricsEndpoint.application(address: address, metrics: metrics, health: health, logger: logger))
        }
        let group = ServiceGroup(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
        try await group.run()
    }
}

struct ExitError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Hands a loop-thread object to closures that run on the loop thread. `@unchecked Sendable`
/// because the compiler cannot see thread confinement: `value` must only be touched from
/// closures given to `EventLoop.execute` or from the loop's own handlers.
final class LoopConfined<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// What /healthz and /readyz report.
final class HealthState: Sendable {
    let ready = Atomic<Bool>(false)
}

/// Runs until graceful shutdown, then stops the loop: STOPPING=1, sockets closed, thread joined.
struct LoopService: Service {
    let loop: EventLoop
    let thread: EventLoopThread
    let runtime: LoopConfined<RelayRuntime>
    let health: HealthState
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        health.ready.store(false, ordering: .releasing)
        SystemdNotifier.notify("STOPPING=1\nSTATUS=stopping")
        logger.notice("fz-relay stopping")
        let runtime = self.runtime
        loop.execute { runtime.value.closeAll() }
        loop.stop()
        thread.join()
    }
}

/// SIGHUP: re-read the configuration file and apply users, secrets, quotas and peer rules.
struct ReloadService: Service {
    let settings: RelaySettings
    let loop: EventLoop
    let runtime: LoopConfined<RelayRuntime>
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        try await cancelWhenGracefulShutdown {
            for await _ in signals {
                var r = settings.reloadable
                if let path = settings.configFile {
                    do {
                        r = try RelaySettings.merge(base: settingsBase, file: path)
                    } catch {
                        logger.error("reload failed, keeping the current configuration: \(error)")
                        continue
                    }
                }
                let runtime = self.runtime
                let s = settings
                loop.execute { [r] in runtime.value.reload(s, r) }
            }
        }
    }

    /// The reloadable settings from flags and environment alone (the file is re-read on top).
    var settingsBase: RelaySettings.Reloadable { settings.commandLineReloadable }
}

enum MetricsEndpoint {
    static func application(address: SocketAddress, metrics: RelayMetrics, health: HealthState, logger: Logger)
        -> some Service
    {
        let router = Router()
        router.get("/metrics") { _, _ -> String in metrics.render() }
        router.get("/healthz") { _, _ -> String in "ok\n" }
        router.get("/readyz") { _, _ -> String in
            guard health.ready.load(ordering: .acquiring) else { throw HTTPError(.serviceUnavailable, message: "not ready") }
            return "ready\n"
        }
        return Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(address.ip.description, port: Int(address.port))),
            logger: logger)
    }
}
