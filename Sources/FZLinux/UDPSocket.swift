#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// A bound, non-blocking, close-on-exec UDP socket.
///
/// IPv6 sockets set `IPV6_V6ONLY`, so an IPv6 socket never sees IPv4-mapped peers and every
/// `SocketAddress` this layer reports is in the family of the socket it came from.
///
/// Not thread-safe: a socket belongs to one event loop (several loops may each own a socket bound to
/// the same port with `reusePort`).
public final class UDPSocket {
    /// The descriptor; valid until `close()`.
    public let fd: Int32
    /// The bound address as the kernel reports it (`getsockname`), so a requested port 0 reads as the
    /// port actually assigned.
    public let localAddress: SocketAddress
    public private(set) var isOpen = true

    /// Opens a UDP socket and binds it.
    ///
    /// - Parameters:
    ///   - reusePort: sets `SO_REUSEPORT` before binding: several sockets (one per loop thread) share
    ///     the port and the kernel spreads flows over them by 4-tuple hash.
    ///   - receiveBufferSize, sendBufferSize: `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` (which ignore
    ///     `net.core.[rw]mem_max` but need CAP_NET_ADMIN), falling back to `SO_RCVBUF`/`SO_SNDBUF`
    ///     (capped by those sysctls) when not permitted. The kernel doubles the value for bookkeeping.
    public init(
        bindingTo address: SocketAddress,
        reusePort: Bool = false,
        receiveBufferSize: Int? = nil,
        sendBufferSize: Int? = nil
    ) throws(SystemError) {
        let fd = try Syscall.check("socket") {
            socket(address.kernelFamily, CFZ_SOCK_DGRAM | CFZ_SOCK_NONBLOCK | CFZ_SOCK_CLOEXEC, CFZ_IPPROTO_UDP)
        }
        do {
            if case .v6 = address.ip {
                try Self.setOption(fd, CFZ_IPPROTO_IPV6, CFZ_IPV6_V6ONLY, 1, "setsockopt(IPV6_V6ONLY)")
            }
            if reusePort {
                try Self.setOption(fd, CFZ_SOL_SOCKET, CFZ_SO_REUSEPORT, 1, "setsockopt(SO_REUSEPORT)")
            }
            if let size = receiveBufferSize {
                try Self.setBufferSize(fd, size, force: CFZ_SO_RCVBUFFORCE, plain: CFZ_SO_RCVBUF, "setsockopt(SO_RCVBUF)")
            }
            if let size = sendBufferSize {
                try Self.setBufferSize(fd, size, force: CFZ_SO_SNDBUFFORCE, plain: CFZ_SO_SNDBUF, "setsockopt(SO_SNDBUF)")
            }
            try address.withSockAddr { (sa, len) throws(SystemError) in
                _ = try Syscall.check("bind") { bind(fd, sa, len) }
            }
            self.localAddress = try Self.boundAddress(fd)
        } catch {
            Syscall.close(fd)
            throw error
        }
        self.fd = fd
    }

    deinit {
        if isOpen { Syscall.close(fd) }
    }

    /// Closes the descriptor (idempotent). Unregister it from its event loop first: epoll forgets a
    /// closed descriptor by itself, but a handler keyed by the number could see a reused one.
    public func close() {
        guard isOpen else { return }
        isOpen = false
        Syscall.close(fd)
    }

    /// The kernel's effective receive buffer size (`SO_RCVBUF`, already doubled by the kernel).
    public func receiveBufferSize() throws(SystemError) -> Int {
        try Int(Self.getOption(fd, CFZ_SOL_SOCKET, CFZ_SO_RCVBUF, "getsockopt(SO_RCVBUF)"))
    }

    /// The kernel's effective send buffer size (`SO_SNDBUF`, already doubled by the kernel).
    public func sendBufferSize() throws(SystemError) -> Int {
        try Int(Self.getOption(fd, CFZ_SOL_SOCKET, CFZ_SO_SNDBUF, "getsockopt(SO_SNDBUF)"))
    }

    /// Sends one datagram with `sendto`. For bulk traffic use `SendQueue`; this is for the occasional
    /// reply and for tests. Per-destination failures (ECONNREFUSED, EMSGSIZE...) throw.
    public func send(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress) throws(SystemError) -> IOResult<Int> {
        precondition(isOpen, "send on a closed UDPSocket")
        return try destination.withSockAddr { (sa, len) throws(SystemError) in
            try Syscall.nonBlocking("sendto") { sendto(fd, bytes.baseAddress, bytes.count, 0, sa, len) }
        }
    }

    /// Receives one datagram with `recvfrom`. For bulk traffic use `ReceivePool`.
    /// The count is the number of bytes stored (at most `buffer.count`; a longer datagram is cut).
    public func receive(
        into buffer: UnsafeMutableRawBufferPointer
    ) throws(SystemError) -> IOResult<(count: Int, source: SocketAddress)> {
        precondition(isOpen, "receive on a closed UDPSocket")
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = try withUnsafeMutablePointer(to: &storage) { (p) throws(SystemError) -> IOResult<Int> in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> IOResult<Int> in
                try Syscall.nonBlocking("recvfrom") { recvfrom(fd, buffer.baseAddress, buffer.count, 0, sa, &length) }
            }
        }
        switch result {
        case .wouldBlock:
            return .wouldBlock
        case .processed(let count):
            guard let source = withUnsafePointer(to: &storage, { SocketAddress(sockaddr: $0, length: length) }) else {
                preconditionFailure("recvfrom on a UDP socket returned a non-IP source address")
            }
            return .processed((count, source))
        }
    }

    // MARK: helpers shared with SocketOptions

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ call: StaticString) throws(SystemError) {
        var v = value
        _ = try Syscall.check(call) { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    static func getOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ call: StaticString) throws(SystemError) -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        _ = try Syscall.check(call) { getsockopt(fd, level, name, &v, &len) }
        return v
    }

    private static func setBufferSize(
        _ fd: Int32, _ size: Int, force: Int32, plain: Int32, _ call: StaticString
    ) throws(SystemError) {
        let value = Int32(clamping: size)
        do {
            try setOption(fd, CFZ_SOL_SOCKET, force, value, call)
        } catch where error.errno == EPERM {
            try setOption(fd, CFZ_SOL_SOCKET, plain, value, call)
        }
    }

    private static func boundAddress(_ fd: Int32) throws(SystemError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { (p) throws(SystemError) -> Int32 in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> Int32 in
                try Syscall.check("getsockname") { getsockname(fd, sa, &length) }
            }
        }
        guard let address = withUnsafePointer(to: &storage, { SocketAddress(sockaddr: $0, length: length) }) else {
            preconditionFailure("getsockname on a UDP socket returned a non-IP address")
        }
        return address
    }
}
