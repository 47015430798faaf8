#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// CLOCK_MONOTONIC as a `Timestamp`. The one clock protocol state machines are driven by: it never
/// jumps with NTP or the administrator (it does stop during suspend, which is what timers want).
public enum MonotonicClock {
    public static func now() -> Timestamp {
        var ts = timespec()
        let rc = clock_gettime(CLOCK_MONOTONIC, &ts)
        // Cannot fail for CLOCK_MONOTONIC with a valid pointer; checked, not assumed.
        precondition(rc == 0, "clock_gettime(CLOCK_MONOTONIC) failed")
        return Timestamp(nanoseconds: UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec))
    }
}

/// Facts about the machine the daemon runs on.
public enum SystemInfo {
    /// Processors online now (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1.
    public static var onlineProcessors: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}
