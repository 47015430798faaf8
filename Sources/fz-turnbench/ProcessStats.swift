#if canImport(Glibc)
import Glibc
#endif

/// Reads another process's CPU time and resident memory from procfs, and this process's thread CPU
/// clocks. Control path only (a few calls per measurement window), so plain libc: FZLinux wraps the
/// socket and epoll calls of the data path and has no procfs reader.
enum ProcessStats {
    /// Clock ticks per second for the utime/stime fields of /proc/PID/stat (USER_HZ, 100 on Linux).
    static let ticksPerSecond: UInt64 = {
        let t = sysconf(Int32(_SC_CLK_TCK))
        return t > 0 ? UInt64(t) : 100
    }()

    /// The whole file at `path` (procfs files report size 0, so read until EOF), or nil.
    static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// utime + stime of every thread of `pid` (fields 14 and 15 of /proc/PID/stat, proc(5)), in
    /// microseconds. The resolution is one clock tick (10 ms). Nil when the process is gone.
    static func cpuMicroseconds(pid: Int32) -> UInt64? {
        cpuTimes(pid: pid).map { $0.user + $0.system }
    }

    /// utime and stime of every thread of `pid`, separately, in microseconds: time in the process's
    /// own code versus time in the kernel on its behalf (system calls, the UDP stack).
    static func cpuTimes(pid: Int32) -> (user: UInt64, system: UInt64)? {
        guard let stat = readFile("/proc/\(pid)/stat") else { return nil }
        // Field 2 (comm) is in parentheses and may contain spaces: count fields after the last ')'.
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state), so field N is fields[N - 3].
        guard fields.count > 12, let utime = UInt64(fields[11]), let stime = UInt64(fields[12]) else { return nil }
        return (utime * 1_000_000 / ticksPerSecond, stime * 1_000_000 / ticksPerSecond)
    }

    /// CPU time the whole machine spent busy (all CPUs, everything but idle and iowait) since boot,
    /// from the first line of /proc/stat, in microseconds. Compared with the server's and this
    /// process's own CPU time it tells how much *other* load (a compiler, say) shared the machine.
    static func machineBusyMicroseconds() -> UInt64? {
        guard let stat = readFile("/proc/stat"), let line = stat.split(separator: "\n").first, line.hasPrefix("cpu ") else {
            return nil
        }
        let values = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard values.count >= 5 else { return nil }
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let total = values.prefix(8).reduce(0, +)
        let busy = total - values[3] - values[4]
        return busy * 1_000_000 / ticksPerSecond
    }

    /// VmRSS of `pid` in KiB (/proc/PID/status), or nil.
    static func residentKiB(pid: Int32) -> UInt64? {
        guard let status = readFile("/proc/\(pid)/status") else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2 { return UInt64(parts[1]) }
        }
        return nil
    }

    /// The command name of `pid` (/proc/PID/comm), for reports.
    static func commandName(pid: Int32) -> String? {
        readFile("/proc/\(pid)/comm").map { String($0.split(separator: "\n").first ?? "") }
    }

    /// CPU time consumed by `thread` (a pthread of this process) so far, in nanoseconds.
    static func threadCPUNanoseconds(_ thread: pthread_t) -> UInt64? {
        var clock = clockid_t()
        guard pthread_getcpuclockid(thread, &clock) == 0 else { return nil }
        var ts = timespec()
        guard clock_gettime(clock, &ts) == 0 else { return nil }
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
