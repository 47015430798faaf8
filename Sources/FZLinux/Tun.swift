#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// A TUN interface (IFF_TUN | IFF_NO_PI): each `read` returns one IP packet the kernel routed to
/// the interface, each `write` injects one. The descriptor is non-blocking and close-on-exec.
///
/// With `offload: true` the interface is attached with IFF_VNET_HDR and TUNSETOFFLOAD (checksum
/// offload, TSO for IPv4 and IPv6), as wireguard-go and Tailscale do since 2023: every read and
/// write starts with a 10-byte `virtio_net_hdr`, reads may return TCP segments of up to 64 KiB
/// with partial checksums (the reader cuts them, `TCPSegmenter`), and a write may hand the kernel
/// one coalesced TCP segment (`TCPCoalescer`). One trip through the kernel's TCP stack and one
/// system call then carry dozens of packets. Where the kernel refuses (no IFF_VNET_HDR or
/// TUNSETOFFLOAD), the device falls back to plain packets and `hasVirtioHeader` is false.
///
/// The interface is not persistent: closing the descriptor removes it, with its addresses and
/// routes, which is what a daemon wants on exit (and after a crash).
///
/// Not thread-safe: it belongs to one event loop thread after set-up.
public final class TunDevice {
    public let fd: Int32
    /// The kernel's name for the interface.
    public let name: String
    /// The interface index, for rtnetlink.
    public let index: Int32
    /// Whether reads and writes carry a `virtio_net_hdr` (offloads on).
    public let hasVirtioHeader: Bool
    public private(set) var isOpen = true

    /// Creates (or attaches to) the TUN interface `name`. Needs CAP_NET_ADMIN.
    ///
    /// - Parameter offload: ask for the virtio header with checksum offload and TSO (see the type).
    public init(name: String, offload: Bool = false) throws(SystemError) {
        var fd = try Syscall.check("open(/dev/net/tun)") { cfz_tun_open_clone_device() }
        var actual = [CChar](repeating: 0, count: Int(CFZ_IFNAMSIZ))
        var virtio = false
        if offload {
            if cfz_tun_attach_flags(fd, name, &actual, 1) == 0, cfz_tun_set_offload(fd, 1) == 0 {
                virtio = true
            } else {
                // An old kernel or a restricted one: start again with a fresh, plain descriptor.
                Syscall.close(fd)
                fd = try Syscall.check("open(/dev/net/tun)") { cfz_tun_open_clone_device() }
            }
        }
        if !virtio {
            do {
                _ = try Syscall.check("ioctl(TUNSETIFF)") { cfz_tun_attach(fd, name, &actual) }
            } catch {
                Syscall.close(fd)
                throw error
            }
        }
        let kernelName = actual.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let index = if_nametoindex(kernelName)
        guard index != 0 else {
            let code = Glibc.errno
            Syscall.close(fd)
            throw SystemError(errno: code, call: "if_nametoindex(\(kernelName))")
        }
        self.fd = fd
        self.name = kernelName
        self.index = Int32(bitPattern: index)
        self.hasVirtioHeader = virtio
    }

    deinit { close() }

    /// Closes the descriptor, which removes the interface (idempotent). Unregister it first.
    public func close() {
        guard isOpen else { return }
        isOpen = false
        Syscall.close(fd)
    }

    /// Reads one packet into `buffer`; `.wouldBlock` when none is waiting.
    @inline(__always)
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        try Syscall.nonBlocking("read(tun)") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// Writes one packet; `.wouldBlock` when the interface's queue is full (the caller drops it).
    /// A packet the kernel rejects (EINVAL: not IP) throws.
    @inline(__always)
    public func write(_ packet: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        try Syscall.nonBlocking("write(tun)") { Glibc.write(fd, packet.baseAddress, packet.count) }
    }

    /// Writes a virtio header and the packet behind it as one packet (`writev`), for a device with
    /// `hasVirtioHeader`. `.wouldBlock` when the queue is full; a header the kernel rejects throws.
    @inline(__always)
    public func write(header: UnsafeRawBufferPointer, packet: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        try Syscall.nonBlocking("writev(tun)") {
            cfz_tun_write2(fd, header.baseAddress, header.count, packet.baseAddress, packet.count)
        }
    }
}

/// Synchronous handling of SIGTERM, SIGINT and SIGHUP: block them early in `main` (before any
/// thread starts, so every thread inherits the mask), then wait for one on the main thread.
public enum TerminationSignals {
    public static func block() throws(SystemError) {
        let rc = cfz_block_termination_signals()
        if rc != 0 { throw SystemError(errno: rc, call: "pthread_sigmask") }
    }

    /// Waits for SIGTERM, SIGINT or SIGHUP and returns its number.
    public static func wait() throws(SystemError) -> Int32 {
        while true {
            let rc = cfz_wait_termination_signal()
            if rc > 0 { return rc }
            if -rc == EINTR { continue }
            throw SystemError(errno: -rc, call: "sigwait")
        }
    }
}
