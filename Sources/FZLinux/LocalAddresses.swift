#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// The IP addresses assigned to this host's interfaces, as `getifaddrs(3)` lists them.
///
/// Used to tell whether a reflexive address a STUN server reports is one of our own (no NAT in
/// between) and, later, for ICE host candidates. Control path: called once per run, it builds an array.
public enum LocalAddresses {
    /// Every IPv4 and IPv6 address of every interface that is up, loopback included, without
    /// duplicates, in the kernel's order. Interfaces without an address (and AF_PACKET entries) are skipped.
    public static func all() throws(SystemError) -> [IPAddress] {
        var head: UnsafeMutablePointer<ifaddrs>?
        _ = try Syscall.check("getifaddrs") { getifaddrs(&head) }
        defer { freeifaddrs(head) }
        var out: [IPAddress] = []
        var entry = head
        while let e = entry {
            defer { entry = e.pointee.ifa_next }
            guard e.pointee.ifa_flags & UInt32(IFF_UP) != 0, let sa = e.pointee.ifa_addr else { continue }
            let length: socklen_t
            switch Int32(sa.pointee.sa_family) {
            case AF_INET: length = socklen_t(MemoryLayout<sockaddr_in>.size)
            case AF_INET6: length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            default: continue
            }
            if let address = SocketAddress(sockaddr: UnsafeRawPointer(sa), length: length), !out.contains(address.ip) {
                out.append(address.ip)
            }
        }
        return out
    }
}
