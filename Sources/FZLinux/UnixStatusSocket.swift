#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore
import Synchronization

/// A daemon's local status endpoint: a Unix stream socket at a path (mode 0600, so only its
/// owner — root for the client daemon — can read it). Each connection gets one answer, the bytes
/// `respond` returns, and is closed; requests carry nothing. Runs on its own thread; `close()`
/// stops it and removes the path.
public final class UnixStatusServer: Sendable {
    public let path: String
    private let fd: Int32
    private let closed = Atomic<Bool>(false)
    private let thread = Mutex<JoinHandle?>(nil)

    private final class JoinHandle: @unchecked Sendable {
        var handle: pthread_t
        init(_ handle: pthread_t) { self.handle = handle }
    }

    /// Binds `path` (a stale socket file there is replaced) and starts answering.
    public init(path: String, respond: @escaping @Sendable () -> [UInt8]) throws(SystemError) {
        self.path = path
        var address = try Self.address(path)
        let fd = try Syscall.check("socket(AF_UNIX)") { socket(AF_UNIX, CFZ_SOCK_STREAM | CFZ_SOCK_CLOEXEC, 0) }
        unlink(path)
        // Created 0600 from the start: no window in which others could connect.
        let previous = umask(0o177)
        let (rc, code) = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                Syscall.run("bind") { bind(fd, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        umask(previous)
        if rc < 0 {
            Syscall.close(fd)
            throw SystemError(errno: code, call: "bind(\(path))")
        }
        guard listen(fd, 16) == 0 else {
            let e = errno
            Syscall.close(fd)
            unlink(path)
            throw SystemError(errno: e, call: "listen(\(path))")
        }
        self.fd = fd
        let box = Unmanaged.passRetained(Worker(fd: fd, respond: respond) as AnyObject)
        var handle = pthread_t()
        let started = pthread_create(&handle, nil, { raw in
            let worker = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! Worker
            worker.run()
            return nil
        }, box.toOpaque())
        if started != 0 {
            box.release()
            Syscall.close(fd)
            unlink(path)
            throw SystemError(errno: started, call: "pthread_create")
        }
        thread.withLock { $0 = JoinHandle(handle) }
    }

    private final class Worker {
        let fd: Int32
        let respond: @Sendable () -> [UInt8]
        init(fd: Int32, respond: @escaping @Sendable () -> [UInt8]) {
            self.fd = fd
            self.respond = respond
        }
        func run() {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return  // shut down (EINVAL) or closed
                }
                var timeout = timeval(tv_sec: 2, tv_usec: 0)
                setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let bytes = respond()
                var offset = 0
                while offset < bytes.count {
                    let n = bytes.withUnsafeBytes { send(client, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
                    if n <= 0 { break }
                    offset += n
                }
                Glibc.close(client)
            }
        }
    }

    /// Stops answering, waits for the thread and removes the socket file.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        if let t = thread.withLock({ $0 }) { pthread_join(t.handle, nil) }
        Syscall.close(fd)
        unlink(path)
    }

    /// Connects to the server at `path` and reads its answer.
    public static func request(_ path: String, timeout: Duration = .seconds(5)) throws(SystemError) -> [UInt8] {
        var address = try Self.address(path)
        let fd = try Syscall.check("socket(AF_UNIX)") { socket(AF_UNIX, CFZ_SOCK_STREAM | CFZ_SOCK_CLOEXEC, 0) }
        defer { Syscall.close(fd) }
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let (rc, code) = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                Syscall.run("connect") { connect(fd, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        if rc < 0 { throw SystemError(errno: code, call: "connect(\(path))") }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError(errno: errno, call: "recv(\(path))")
            }
            if n == 0 { return out }
            out += chunk[0..<n]
        }
    }

    static func address(_ path: String) throws(SystemError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else { throw SystemError(errno: ENAMETOOLONG, call: "socket path \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
        return address
    }
}
