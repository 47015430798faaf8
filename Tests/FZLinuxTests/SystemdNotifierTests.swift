#if canImport(Glibc)
import Glibc
#endif
import FZLinux
import Testing

/// These tests change the process environment, so they run one at a time and restore it.
@Suite("SystemdNotifier", .serialized)
struct SystemdNotifierTests {
    static let variables = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]

    /// Runs `body` and restores the variables it may change.
    func withSavedEnvironment<R>(_ body: () throws -> R) rethrows -> R {
        let saved = Self.variables.map { name in getenv(name).map { String(cString: $0) } }
        defer {
            for (name, value) in zip(Self.variables, saved) {
                if let value { setenv(name, value, 1) } else { unsetenv(name) }
            }
        }
        return try body()
    }

    /// A unix datagram socket bound in a fresh temporary directory, standing in for systemd.
    final class FakeNotifySocket {
        let fd: Int32
        let directory: String
        let path: String

        init() throws {
            var template = Array("/tmp/fzlinux-notify-XXXXXX".utf8CString)
            guard let dir = mkdtemp(&template) else { throw TestFailure("mkdtemp failed: errno \(errno)") }
            directory = String(cString: dir)
            path = directory + "/notify"
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw TestFailure("socket(AF_UNIX) failed: errno \(errno)") }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let pathBytes = Array(path.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (i, b) in pathBytes.enumerated() { raw[i] = b }
                raw[pathBytes.count] = 0
            }
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard rc == 0 else { throw TestFailure("bind(\(path)) failed: errno \(errno)") }
        }

        /// The next message, read without blocking (sd_notify has already sent it when it returns).
        func read() -> String? {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            guard n >= 0 else { return nil }
            return String(decoding: buffer[0..<n], as: UTF8.self)
        }

        deinit {
            close(fd)
            unlink(path)
            rmdir(directory)
        }
    }

    @Test("notify is a no-op returning false without NOTIFY_SOCKET")
    func notifyWithoutSocket() {
        withSavedEnvironment {
            unsetenv("NOTIFY_SOCKET")
            #expect(!SystemdNotifier.notify("READY=1"))
        }
    }

    @Test("notify delivers its state to the socket named by NOTIFY_SOCKET")
    func notifyDelivers() throws {
        try withSavedEnvironment {
            let fake = try FakeNotifySocket()
            setenv("NOTIFY_SOCKET", fake.path, 1)
            #expect(SystemdNotifier.notify("READY=1\nSTATUS=x"))
            #expect(fake.read() == "READY=1\nSTATUS=x")
            #expect(SystemdNotifier.notify("STOPPING=1"))
            #expect(fake.read() == "STOPPING=1")
        }
    }

    @Test("the watchdog interval comes from WATCHDOG_USEC when WATCHDOG_PID is unset or ours")
    func watchdogInterval() {
        withSavedEnvironment {
            setenv("WATCHDOG_USEC", "2000000", 1)
            unsetenv("WATCHDOG_PID")
            #expect(SystemdNotifier.watchdogInterval == .seconds(2))

            setenv("WATCHDOG_PID", "\(getpid())", 1)
            #expect(SystemdNotifier.watchdogInterval == .seconds(2))
        }
    }

    @Test("the watchdog is off when WATCHDOG_USEC is unset or meant for another process")
    func watchdogOff() {
        withSavedEnvironment {
            unsetenv("WATCHDOG_USEC")
            unsetenv("WATCHDOG_PID")
            #expect(SystemdNotifier.watchdogInterval == nil)

            setenv("WATCHDOG_USEC", "2000000", 1)
            setenv("WATCHDOG_PID", "\(getpid() + 1)", 1)
            #expect(SystemdNotifier.watchdogInterval == nil)
        }
    }
}
