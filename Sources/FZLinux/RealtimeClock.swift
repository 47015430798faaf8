import CFZLinux

#if canImport(Glibc)
import Glibc
#endif

/// CLOCK_REALTIME, for values that cross machines: TURN REST usernames carry a unix expiry time
/// (`<unix-expiry>:<id>`), WireGuard handshakes a TAI64N timestamp. Never use it for timeouts; it
/// can jump (`MonotonicClock` is for those).
public enum RealtimeClock {
    /// Seconds since the unix epoch (0 if the clock is set before 1970).
    public static func unixSeconds() -> UInt64 { now().seconds }

    /// With nanoseconds, for WireGuard's TAI64N handshake timestamps: a restarted daemon must send
    /// a timestamp greater than its previous run's (whitepaper §5.1), which a whole-second
    /// reading cannot promise for a restart within the same second.
    public static func now() -> (seconds: UInt64, nanoseconds: UInt32) {
        var ts = timespec()
        let rc = clock_gettime(CLOCK_REALTIME, &ts)
        precondition(rc == 0, "clock_gettime(CLOCK_REALTIME) failed")
        guard ts.tv_sec >= 0 else { return (0, 0) }
        return (UInt64(ts.tv_sec), UInt32(ts.tv_nsec))
    }
}
