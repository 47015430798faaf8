#if canImport(Glibc)
import Glibc
#endif

/// An exclusive advisory lock (flock(2)) on a file, held until `release()` or process exit (the
/// kernel drops it when the descriptor closes, so a crashed holder never leaves it stale).
///
/// The portal takes one beside its SQLite database: two portals on one file would each keep their
/// own presence and connections, so a token revoked through one would keep its sessions on the
/// other. A lock file of its own, not the database file: closing any other descriptor of the
/// database would drop SQLite's own POSIX locks.
public final class FileLock {
    public let path: String
    private var fd: Int32

    /// Opens (creating it, mode 0600) and locks `path`, or throws at once: `EWOULDBLOCK` when
    /// another process holds the lock.
    public init(path: String) throws(SystemError) {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError(errno: errno, call: "open(\(path))") }
        var rc: Int32
        repeat { rc = flock(fd, LOCK_EX | LOCK_NB) } while rc != 0 && errno == EINTR
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw SystemError(errno: e, call: "flock(\(path))")
        }
        self.fd = fd
    }

    /// True when the error means another process holds the lock.
    public static func isHeldElsewhere(_ error: SystemError) -> Bool { error.errno == EWOULDBLOCK }

    public func release() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }

    deinit { release() }
}
