#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// A non-blocking, close-on-exec TCP listening socket.
///
/// `SO_REUSEADDR` is always set (a restarted server may bind while old connections sit in
/// TIME_WAIT; Linux still refuses a second listener on the port). IPv6 sockets are IPv6-only, as
/// `UDPSocket`'s are. Not thread-safe: a listener belongs to one event loop (several loops may
/// each own one on the same port with `reusePort`, the kernel spreading connections over them).
public final class TCPListener {
    public let fd: Int32
    public let localAddress: SocketAddress
    public private(set) var isOpen = true

    /// Binds and, unless `listen` is false (a probe that only checks the address is free), listens.
    public init(bindingTo address: SocketAddress, reusePort: Bool = false, backlog: Int32 = 1024,
                listen shouldListen: Bool = true) throws(SystemError) {
        let fd = try Syscall.check("socket") {
            socket(address.kernelFamily, CFZ_SOCK_STREAM | CFZ_SOCK_NONBLOCK | CFZ_SOCK_CLOEXEC, CFZ_IPPROTO_TCP)
        }
        do {
            if case .v6 = address.ip {
                try UDPSocket.setOption(fd, CFZ_IPPROTO_IPV6, CFZ_IPV6_V6ONLY, 1, "setsockopt(IPV6_V6ONLY)")
            }
            try UDPSocket.setOption(fd, CFZ_SOL_SOCKET, CFZ_SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)")
            if reusePort {
                try UDPSocket.setOption(fd, CFZ_SOL_SOCKET, CFZ_SO_REUSEPORT, 1, "setsockopt(SO_REUSEPORT)")
            }
            try address.withSockAddr { (sa, len) throws(SystemError) in
                _ = try Syscall.check("bind") { bind(fd, sa, len) }
            }
            if shouldListen {
                _ = try Syscall.check("listen") { Glibc.listen(fd, backlog) }
            }
            localAddress = try TCPConnection.address(fd, getsockname, "getsockname")
        } catch {
            Syscall.close(fd)
            throw error
        }
        self.fd = fd
    }

    deinit { if isOpen { Syscall.close(fd) } }

    public func close() {
        guard isOpen else { return }
        isOpen = false
        Syscall.close(fd)
    }

    /// Accepts one pending connection (non-blocking, close-on-exec). `.wouldBlock` when none is
    /// pending, and also for a connection that was reset before it could be accepted
    /// (ECONNABORTED) — the caller just tries again at the next readiness. Running out of
    /// descriptors (EMFILE, ENFILE) or memory throws.
    public func accept() throws(SystemError) -> IOResult<TCPConnection> {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = try withUnsafeMutablePointer(to: &storage) { (p) throws(SystemError) -> IOResult<Int32> in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> IOResult<Int32> in
                let (rc, code) = Syscall.run("accept4") { cfz_accept4(fd, sa, &length) }
                if rc >= 0 { return .processed(rc) }
                switch code {
                case EAGAIN, EWOULDBLOCK, ECONNABORTED, EPROTO: return .wouldBlock
                default: throw SystemError(errno: code, call: "accept4")
                }
            }
        }
        guard case .processed(let conn) = result else { return .wouldBlock }
        guard let remote = withUnsafePointer(to: &storage, { SocketAddress(sockaddr: $0, length: length) }) else {
            Syscall.close(conn)
            return .wouldBlock
        }
        return .processed(TCPConnection(fd: conn, remote: remote, local: localAddress))
    }
}

/// An accepted, non-blocking TCP connection: reads and writes that never block and never raise
/// SIGPIPE. Not thread-safe; belongs to the loop that accepted it.
public final class TCPConnection {
    public let fd: Int32
    public let remoteAddress: SocketAddress
    public let localAddress: SocketAddress
    public private(set) var isOpen = true

    init(fd: Int32, remote: SocketAddress, local: SocketAddress) {
        self.fd = fd
        remoteAddress = remote
        localAddress = local
    }

    deinit { if isOpen { Syscall.close(fd) } }

    public func close() {
        guard isOpen else { return }
        isOpen = false
        Syscall.close(fd)
    }

    /// TCP_NODELAY: a relay forwards datagrams; Nagle's delay would only add latency.
    public func setNoDelay() throws(SystemError) {
        try UDPSocket.setOption(fd, CFZ_IPPROTO_TCP, CFZ_TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)")
    }

    /// Reads what is there, at most `buffer.count` bytes; `.processed(0)` is the peer's end of stream.
    /// A reset connection (ECONNRESET, ETIMEDOUT...) throws.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        precondition(isOpen, "read on a closed TCPConnection")
        return try Syscall.nonBlocking("recv") { recv(fd, buffer.baseAddress, buffer.count, 0) }
    }

    /// Writes as much of `bytes` as the send buffer takes (possibly less than all). A reset or
    /// closed connection (EPIPE, ECONNRESET) throws.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        precondition(isOpen, "write on a closed TCPConnection")
        return try Syscall.nonBlocking("send") { send(fd, bytes.baseAddress, bytes.count, CFZ_MSG_NOSIGNAL) }
    }

    static func address(
        _ fd: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32,
        _ name: StaticString
    ) throws(SystemError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { (p) throws(SystemError) -> Int32 in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> Int32 in
                try Syscall.check(name) { call(fd, sa, &length) }
            }
        }
        guard let address = withUnsafePointer(to: &storage, { SocketAddress(sockaddr: $0, length: length) }) else {
            preconditionFailure("\(name) on a TCP socket returned a non-IP address")
        }
        return address
    }
}
