import CSystemd

/// systemd's `Type=notify` protocol through libsystemd (sd_notify(3), sd_watchdog_enabled(3)).
///
/// Without `NOTIFY_SOCKET` in the environment (not started by systemd) every call is a no-op.
public enum SystemdNotifier {
    /// Sends `state` ("READY=1", "STATUS=...", "STOPPING=1", "WATCHDOG=1"; several separated by
    /// newlines). True if it was delivered; false when `NOTIFY_SOCKET` is unset or sending failed.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        let rc = state.withCString { sd_notify(0, $0) }
        return rc > 0
    }

    /// The watchdog period systemd expects `WATCHDOG=1` within (`WATCHDOG_USEC`), or nil when the
    /// watchdog is off or meant for another process (`WATCHDOG_PID`). Ping at half this interval.
    public static var watchdogInterval: Duration? {
        var usec: UInt64 = 0
        let rc = sd_watchdog_enabled(0, &usec)
        guard rc > 0, usec > 0 else { return nil }
        return .microseconds(Int64(clamping: usec))
    }
}
