import FZCore
import FZLinux
import ServiceLifecycle
import Synchronization

/// systemd's watchdog (`WatchdogSec=`, sd_watchdog_enabled(3)) fed only while the daemon is alive:
/// each event loop records a heartbeat as part of its housekeeping, and `WATCHDOG=1` goes out
/// (at most every half interval) only while every loop's heartbeat is fresh. A loop stuck in a
/// system call or a busy loop therefore stops the pings, and systemd restarts the daemon — which
/// a ping from an independent timer thread would hide. A daemon without loop threads (the
/// portal) has zero loops and pings from `WatchdogService`.
///
/// Thread-safe; `beat` is one uncontended lock per loop and second.
public final class Watchdog: Sendable {
    /// systemd's period (`WATCHDOG_USEC`); nil when the watchdog is off (then nothing is sent).
    public let interval: Duration?
    private let notify: @Sendable (String) -> Void
    private struct State {
        var beats: [Timestamp?]
        var lastPing: Timestamp?
    }
    private let state: Mutex<State>

    public init(loops: Int, interval: Duration? = SystemdNotifier.watchdogInterval,
                notify: @escaping @Sendable (String) -> Void = { SystemdNotifier.notify($0) }) {
        self.interval = interval
        self.notify = notify
        // A loop that has not run yet counts as stale: pings start once every loop is up.
        state = Mutex(State(beats: Array(repeating: nil, count: loops)))
    }

    /// How often loops should run their housekeeping (and so `beat`) for the watchdog to stay
    /// fed: a quarter of its interval, at most once a second.
    public var beatPeriod: Duration {
        guard let interval else { return .seconds(1) }
        return min(.seconds(1), interval / 4)
    }

    /// How long a heartbeat counts as fresh: the watchdog interval, but never under 3 s so a
    /// loop delayed by a burst of work is not taken for a stuck one.
    public var freshness: Duration { max(interval ?? .seconds(3), .seconds(3)) }

    /// Loop `loop` is alive at `now` (monotonic).
    public func beat(loop: Int, now: Timestamp) {
        state.withLock { $0.beats[loop] = now }
    }

    /// Every loop has beaten within `freshness` of `now`.
    public func loopsAlive(now: Timestamp) -> Bool {
        let within = freshness
        return state.withLock { s in s.beats.allSatisfy { Self.fresh($0, now, within) } }
    }

    /// Sends `WATCHDOG=1` when half an interval has passed since the last ping and every loop is
    /// alive; true when it sent. Call it from a loop's housekeeping or from `WatchdogService`.
    @discardableResult
    public func pingIfDue(now: Timestamp) -> Bool {
        guard let interval else { return false }
        let within = freshness
        let due = state.withLock { s -> Bool in
            if let last = s.lastPing, now - last < interval / 2 - .milliseconds(5) { return false }
            guard s.beats.allSatisfy({ Self.fresh($0, now, within) }) else { return false }
            s.lastPing = now
            return true
        }
        if due { notify("WATCHDOG=1") }
        return due
    }

    private static func fresh(_ beat: Timestamp?, _ now: Timestamp, _ within: Duration) -> Bool {
        guard let beat else { return false }
        return beat <= now ? now - beat <= within : true
    }
}


/// Calls `pingIfDue` every half interval until shutdown, for daemons whose liveness is their
/// async control plane (the portal), or as the pinger of loops that only `beat`.
public struct WatchdogService: Service, CustomStringConvertible {
    public var description: String { "WatchdogService" }
    let watchdog: Watchdog

    public init(watchdog: Watchdog) { self.watchdog = watchdog }

    public func run() async throws {
        guard let interval = watchdog.interval else { return try await gracefulShutdown() }
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            watchdog.pingIfDue(now: MonotonicClock.now())
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval / 2) }
        }
    }
}
