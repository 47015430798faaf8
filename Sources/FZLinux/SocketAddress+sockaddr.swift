#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// Conversions between `SocketAddress` and the kernel's `sockaddr_in`/`sockaddr_in6`, without heap
/// allocation (they run once per datagram).
///
/// Scope ids and flow labels are not represented: `SocketAddress` has no zone, so link-local IPv6
/// peers (`fe80::/10`) are out of scope for this layer and are written with scope id 0.
extension SocketAddress {
    /// Writes the address into `storage` and returns the length to pass as `socklen_t`.
    @inline(__always)
    func write(to storage: UnsafeMutablePointer<sockaddr_storage>) -> socklen_t {
        let raw = UnsafeMutableRawPointer(storage)
        switch ip {
        case .v4(let a):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr = in_addr(s_addr: a.value.bigEndian)
            raw.storeBytes(of: sin, as: sockaddr_in.self)
            return socklen_t(MemoryLayout<sockaddr_in>.size)
        case .v6(let a):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { bytes in
                bytes.storeBytes(of: a.high.bigEndian, toByteOffset: 0, as: UInt64.self)
                bytes.storeBytes(of: a.low.bigEndian, toByteOffset: 8, as: UInt64.self)
            }
            raw.storeBytes(of: sin6, as: sockaddr_in6.self)
            return socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
    }

    /// Calls `body` with a `sockaddr` for this address living on the stack.
    @inline(__always)
    func withSockAddr<R, E: Error>(
        _ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R
    ) throws(E) -> R {
        var storage = sockaddr_storage()
        let length = write(to: &storage)
        return try withUnsafePointer(to: &storage) { (p) throws(E) -> R in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in
                try body(sa, length)
            }
        }
    }

    /// Parses an `AF_INET`/`AF_INET6` socket address as the kernel wrote it; nil for any other
    /// family or a length too short for the family.
    @inline(__always)
    init?(sockaddr raw: UnsafeRawPointer, length: socklen_t) {
        guard Int(length) >= MemoryLayout<sa_family_t>.size else { return nil }
        let family = raw.loadUnaligned(as: sa_family_t.self)
        switch Int32(family) {
        case AF_INET:
            guard Int(length) >= MemoryLayout<sockaddr_in>.size else { return nil }
            let port = raw.loadUnaligned(fromByteOffset: Self.sinPortOffset, as: UInt16.self)
            let addr = raw.loadUnaligned(fromByteOffset: Self.sinAddrOffset, as: UInt32.self)
            self.init(IPv4Address(UInt32(bigEndian: addr)), UInt16(bigEndian: port))
        case AF_INET6:
            guard Int(length) >= MemoryLayout<sockaddr_in6>.size else { return nil }
            let port = raw.loadUnaligned(fromByteOffset: Self.sin6PortOffset, as: UInt16.self)
            let high = raw.loadUnaligned(fromByteOffset: Self.sin6AddrOffset, as: UInt64.self)
            let low = raw.loadUnaligned(fromByteOffset: Self.sin6AddrOffset + 8, as: UInt64.self)
            self.init(IPv6Address(high: UInt64(bigEndian: high), low: UInt64(bigEndian: low)), UInt16(bigEndian: port))
        default:
            return nil
        }
    }

    // Offsets are taken from the imported C layouts rather than written as numbers.
    private static let sinPortOffset = MemoryLayout<sockaddr_in>.offset(of: \.sin_port)!
    private static let sinAddrOffset = MemoryLayout<sockaddr_in>.offset(of: \.sin_addr)!
    private static let sin6PortOffset = MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!
    private static let sin6AddrOffset = MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr)!

    /// The kernel's address family constant for this address.
    var kernelFamily: Int32 {
        switch ip {
        case .v4: AF_INET
        case .v6: AF_INET6
        }
    }
}
