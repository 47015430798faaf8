#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// A lock named in Linux's abstract Unix socket namespace (unix(7)): held while a Unix socket is
/// bound to `"\0" + name`. Binding is atomic, so two processes can never both hold one name; the
/// kernel drops the name when the socket closes, so a crashed holder never leaves it stale; and
/// nothing is written to disk. The namespace belongs to the network namespace, the same scope as
/// the ports a daemon binds, which is what fz-relay uses it for (one relay per address).
///
/// Not thread-safe; held by one owner until `release()` or deinit.
public final class AbstractLock {
    public let name: String
    private var fd: Int32

    /// Takes the lock or throws at once: `EADDRINUSE` when another socket holds the name.
    public init(name: String) throws(SystemError) {
        let bytes = Array(name.utf8)
        var address = sockaddr_un()
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // The leading NUL makes the name abstract; the rest must fit after it.
        precondition(bytes.count + 1 <= capacity, "abstract socket name longer than \(capacity - 1) bytes")
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            path[0] = 0
            for (i, b) in bytes.enumerated() { path[i + 1] = b }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + 1 + bytes.count)
        let fd = try Syscall.check("socket(AF_UNIX)") { socket(AF_UNIX, CFZ_SOCK_DGRAM | CFZ_SOCK_CLOEXEC, 0) }
        let (rc, code) = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in Syscall.run("bind") { bind(fd, sa, length) } }
        }
        if rc < 0 {
            Syscall.close(fd)
            throw SystemError(errno: code, call: "bind(@\(name))")
        }
        self.name = name
        self.fd = fd
    }

    /// Retries `init(name:)` while another process holds the name, for at most `timeout`: for
    /// locks held only briefly (a start-up critical section). Throws the last `EADDRINUSE` when
    /// the holder keeps it longer, any other error at once.
    public static func acquire(name: String, timeout: Duration) throws(SystemError) -> AbstractLock {
        let deadline = MonotonicClock.now() + timeout
        while true {
            do {
                return try AbstractLock(name: name)
            } catch where error.errno == EADDRINUSE && MonotonicClock.now() < deadline {
                var pause = timespec(tv_sec: 0, tv_nsec: 5_000_000)
                _ = nanosleep(&pause, nil)
            }
        }
    }

    /// True when the error means another process holds the name.
    public static func isHeldElsewhere(_ error: SystemError) -> Bool { error.errno == EADDRINUSE }

    public func release() {
        guard fd >= 0 else { return }
        Syscall.close(fd)
        fd = -1
    }

    deinit { release() }
}
