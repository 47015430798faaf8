import FZCore
import FZDaemon
import FZLinux
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
        let metrics = RelayMetrics(registry: registry, shards: settings.threads)
        let health = HealthState(shards: settings.threads)
        let directory = ShardDirectory(shards: settings.threads)
        let watchdog = Watchdog(loops: settings.threads)
        let shards: [LoopConfined<RelayShard>]
        do {
            shards = try Self.makeShards(settings: settings, directory: directory, metrics: metrics, watchdog: watchdog, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitError(message: "fz-relay: cannot start: \(error)")
        }
        let listening = shards[0].value.listeningAddresses.map(\.description).sorted().joined(separator: ", ")
        let relayIPs = settings.relayAddresses.map { "\($0.bind)" + ($0.advertised != $0.bind ? " (as \($0.advertised))" : "") }
        let threads = settings.threads
        var handles: [EventLoopThread] = []
        for s in shards {
            // Readiness is declared from inside the loops, so READY=1 means every shard is serving.
            s.value.loop.execute {
                guard health.shardStarted() else { return }
                SystemdNotifier.notify("READY=1\nSTATUS=listening on \(listening) with \(threads) threads")
                s.value.logger.notice("fz-relay ready", metadata: [
                    "listening": "\(listening)", "relay-ip": "\(relayIPs.joined(separator: ", "))",
                    "ports": "\(settings.portRange.lowerBound)-\(settings.portRange.upperBound)", "realm": "\(settings.realm)",
                    "threads": "\(threads)",
                ])
            }
            handles.append(try s.value.loop.start(name: "fz-relay-\(s.value.index)"))
        }

        let secrets = RelaySecrets(base: settings.reloadable)
        var services: [any Service] = [
            LoopService(shards: shards, threads: handles, health: health, logger: logger),
            ReloadService(settings: settings, secrets: secrets, shards: shards, logger: logger),
        ]
        if let portal = settings.portal {
            services.append(RelayPortalService(portal: portal, settings: settings, secrets: secrets, shards: shards, logger: logger))
        }
        if let address = settings.metricsListen {
            services.append(DaemonEndpoints.service(address: address, readiness: health.readiness, logger: logger) { metrics.render() })
        }
        let group = ServiceGroup(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
        try await group.run()
    }
}

extension RelayDaemon {
    /// Binds every shard's sockets and registers them with its (not yet running) loop.
    static func makeShards(settings: RelaySettings, directory: ShardDirectory, metrics: RelayMetrics, watchdog: Watchdog? = nil,
                           logger: Logger)
        throws -> [LoopConfined<RelayShard>]
    {
        // One relay per address: no other process may serve a listening address (ListenerClaim).
        try ListenerClaim.exclusively(udp: settings.listeners, tcp: settings.tcp ? settings.listeners : []) {
            try bindShards(settings: settings, directory: directory, metrics: metrics, watchdog: watchdog, logger: logger)
        }
    }

    private static func bindShards(settings: RelaySettings, directory: ShardDirectory, metrics: RelayMetrics,
                                   watchdog: Watchdog?, logger: Logger) throws(SystemError) -> [LoopConfined<RelayShard>]
    {
        // One nonce secret for all shards: a nonce issued by one is valid at the others.
        let nonceSecret = NonceIssuer.randomSecret()
        var shards: [LoopConfined<RelayShard>] = []
        for i in 0..<settings.threads {
            let loop = try EventLoop()
            let shard = try RelayShard(
                index: i, settings: settings, directory: directory, nonceSecret: nonceSecret, loop: loop,
                logger: logger, metrics: metrics)
            try shard.register()
            shard.watchdog = watchdog
            shards.append(LoopConfined(shard))
        }
        for s in shards { s.value.shards = shards }
        return shards
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

/// Readiness once every shard runs (what /readyz reports).
final class HealthState: Sendable {
    let readiness = Readiness()
    private let waiting: Atomic<Int>

    init(shards: Int) { waiting = Atomic(shards) }

    /// Called once by each shard's loop when it runs; true for the last one (then ready).
    func shardStarted() -> Bool {
        let (_, after) = waiting.subtract(1, ordering: .acquiringAndReleasing)
        guard after == 0 else { return false }
        readiness.set(true)
        return true
    }
}

/// Runs until graceful shutdown, then stops the loops: STOPPING=1, sockets closed, threads joined.
struct LoopService: Service, CustomStringConvertible {
    var description: String { "LoopService(threads: \(threads.count))" }
    let shards: [LoopConfined<RelayShard>]
    let threads: [EventLoopThread]
    let health: HealthState
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        health.readiness.set(false)
        SystemdNotifier.notify("STOPPING=1\nSTATUS=stopping")
        logger.notice("fz-relay stopping")
        for s in shards {
            s.value.loop.execute { s.value.closeAll() }
            s.value.loop.stop()
        }
        for t in threads { t.join() }
    }
}

/// SIGHUP: re-read the configuration file and apply users, secrets, quotas and peer rules.
struct ReloadService: Service, CustomStringConvertible {
    var description: String { "ReloadService" }
    let settings: RelaySettings
    let secrets: RelaySecrets
    let shards: [LoopConfined<RelayShard>]
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        try await cancelWhenGracefulShutdown {
            for await _ in signals {
                var r = settings.reloadable
                if let path = settings.configFile {
                    do {
                        r = try RelaySettings.merge(base: settings.commandLineReloadable, file: path)
                    } catch {
                        logger.error("reload failed, keeping the current configuration: \(error)")
                        continue
                    }
                }
                // The portal's TURN secret (portal mode) stays whatever the file says.
                secrets.setBase(r)
                RelaySecrets.apply(secrets.effective, settings: settings, to: shards)
            }
        }
    }
}
