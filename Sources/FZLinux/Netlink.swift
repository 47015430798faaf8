#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// An address assigned to an interface: unlike `CIDR` it keeps its host bits (`10.0.0.1/24`).
public struct InterfaceAddress: Hashable, Sendable, CustomStringConvertible {
    public let ip: IPAddress
    public let prefixLength: Int

    public init?(ip: IPAddress, prefixLength: Int) {
        guard prefixLength >= 0, prefixLength <= (ip.family == .v4 ? 32 : 128) else { return nil }
        self.ip = ip
        self.prefixLength = prefixLength
    }

    /// Parses `a.b.c.d/n`, `x::y/n` or a bare address (a host prefix).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let ip = IPAddress(String(parts[0])) else { return nil }
        var length = ip.family == .v4 ? 32 : 128
        if parts.count == 2 {
            guard let n = Int(parts[1]) else { return nil }
            length = n
        }
        self.init(ip: ip, prefixLength: length)
    }

    /// The network this address is in.
    public var network: CIDR { CIDR(address: ip, prefixLength: prefixLength)! }

    public var description: String { "\(ip)/\(prefixLength)" }
}

/// rtnetlink message encoding (rtnetlink(7), netlink(7)): the pure part, tested without a socket.
///
/// Numbers are the Linux UAPI values (`linux/netlink.h`, `linux/rtnetlink.h`, `linux/if_addr.h`,
/// `linux/if_link.h`), which never change once released. Multi-byte fields are in host byte order,
/// except addresses, which are in network order as in every other socket API.
public enum RouteNetlink {
    // nlmsghdr types and flags
    public static let NLMSG_ERROR: UInt16 = 2
    public static let NLMSG_DONE: UInt16 = 3
    public static let NLM_F_REQUEST: UInt16 = 0x1
    public static let NLM_F_ACK: UInt16 = 0x4
    public static let NLM_F_REPLACE: UInt16 = 0x100
    public static let NLM_F_EXCL: UInt16 = 0x200
    public static let NLM_F_CREATE: UInt16 = 0x400

    // rtnetlink message types
    public static let RTM_NEWLINK: UInt16 = 16
    public static let RTM_DELLINK: UInt16 = 17
    public static let RTM_NEWADDR: UInt16 = 20
    public static let RTM_NEWROUTE: UInt16 = 24
    public static let RTM_DELROUTE: UInt16 = 25

    // attributes
    public static let IFLA_MTU: UInt16 = 4
    public static let IFA_ADDRESS: UInt16 = 1
    public static let IFA_LOCAL: UInt16 = 2
    public static let RTA_DST: UInt16 = 1
    public static let RTA_OIF: UInt16 = 4

    public static let IFF_UP: UInt32 = 0x1
    /// IPv6 addresses skip duplicate address detection: a point-to-point tunnel has no neighbours,
    /// and DAD would keep the address "tentative" (unusable as a source) for about a second.
    public static let IFA_F_NODAD: UInt8 = 0x02
    public static let RT_TABLE_MAIN: UInt8 = 254
    public static let RTPROT_STATIC: UInt8 = 4
    public static let RT_SCOPE_UNIVERSE: UInt8 = 0
    public static let RT_SCOPE_LINK: UInt8 = 253
    public static let RTN_UNICAST: UInt8 = 1

    static let headerSize = 16

    /// A netlink message under construction: `nlmsghdr`, a fixed family header, attributes.
    /// Control-path code (a handful of messages at start-up), so it builds an array.
    public struct Message: Equatable, Sendable {
        public private(set) var bytes: [UInt8]

        public init(type: UInt16, flags: UInt16, sequence: UInt32) {
            bytes = []
            bytes.reserveCapacity(64)
            append32(0)  // nlmsg_len, patched by every append
            append16(type)
            append16(flags)
            append32(sequence)
            append32(0)  // nlmsg_pid: 0 addresses the kernel
        }

        public mutating func append8(_ v: UInt8) { bytes.append(v); patchLength() }
        public mutating func append16(_ v: UInt16) { withUnsafeBytes(of: v) { bytes += $0 }; patchLength() }
        public mutating func append32(_ v: UInt32) { withUnsafeBytes(of: v) { bytes += $0 }; patchLength() }

        /// An `rtattr` (length, type, payload) padded to 4 bytes (RTA_ALIGN).
        public mutating func appendAttribute(_ type: UInt16, _ payload: [UInt8]) {
            append16(UInt16(4 + payload.count))
            append16(type)
            bytes += payload
            while bytes.count % 4 != 0 { bytes.append(0) }
            patchLength()
        }

        private mutating func patchLength() {
            guard bytes.count >= 4 else { return }
            let length = UInt32(bytes.count)
            withUnsafeBytes(of: length) { for i in 0..<4 { bytes[i] = $0[i] } }
        }
    }

    static func family(_ ip: IPAddress) -> UInt8 { ip.family == .v4 ? UInt8(AF_INET) : UInt8(AF_INET6) }

    /// The address in network byte order (4 or 16 bytes).
    static func addressBytes(_ ip: IPAddress) -> [UInt8] {
        switch ip {
        case .v4(let a): withUnsafeBytes(of: a.value.bigEndian) { Array($0) }
        case .v6(let a): a.bytes
        }
    }

    /// RTM_NEWLINK on an existing interface (`ip link set dev X up mtu N`): `ifinfomsg` with
    /// IFF_UP in flags and change, plus IFLA_MTU.
    public static func setLink(index: Int32, up: Bool, mtu: Int?, sequence: UInt32) -> Message {
        var m = Message(type: RTM_NEWLINK, flags: NLM_F_REQUEST | NLM_F_ACK, sequence: sequence)
        m.append8(UInt8(AF_UNSPEC))  // ifi_family
        m.append8(0)  // padding
        m.append16(0)  // ifi_type
        m.append32(UInt32(bitPattern: index))
        m.append32(up ? IFF_UP : 0)  // ifi_flags
        m.append32(IFF_UP)  // ifi_change: only the UP bit is touched
        if let mtu { m.appendAttribute(IFLA_MTU, withUnsafeBytes(of: UInt32(mtu)) { Array($0) }) }
        return m
    }

    /// RTM_DELLINK by index (`ip link del dev X`).
    public static func deleteLink(index: Int32, sequence: UInt32) -> Message {
        var m = Message(type: RTM_DELLINK, flags: NLM_F_REQUEST | NLM_F_ACK, sequence: sequence)
        m.append8(UInt8(AF_UNSPEC))
        m.append8(0)
        m.append16(0)
        m.append32(UInt32(bitPattern: index))
        m.append32(0)
        m.append32(0)
        return m
    }

    /// RTM_NEWADDR (`ip addr add A/N dev X`): `ifaddrmsg` plus IFA_LOCAL and IFA_ADDRESS (equal on a
    /// non-point-to-point link; the kernel derives the prefix route from them).
    public static func addAddress(_ address: InterfaceAddress, index: Int32, sequence: UInt32) -> Message {
        var m = Message(type: RTM_NEWADDR, flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                        sequence: sequence)
        m.append8(family(address.ip))
        m.append8(UInt8(address.prefixLength))
        m.append8(address.ip.family == .v6 ? IFA_F_NODAD : 0)  // ifa_flags
        m.append8(RT_SCOPE_UNIVERSE)
        m.append32(UInt32(bitPattern: index))
        let raw = addressBytes(address.ip)
        m.appendAttribute(IFA_LOCAL, raw)
        m.appendAttribute(IFA_ADDRESS, raw)
        return m
    }

    /// RTM_NEWROUTE (`ip route add P dev X`): a link-scope unicast route in the main table.
    public static func addRoute(_ prefix: CIDR, index: Int32, sequence: UInt32) -> Message {
        route(RTM_NEWROUTE, flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, prefix, index: index, sequence: sequence)
    }

    /// RTM_DELROUTE (`ip route del P dev X`): the route `addRoute` made.
    public static func deleteRoute(_ prefix: CIDR, index: Int32, sequence: UInt32) -> Message {
        route(RTM_DELROUTE, flags: NLM_F_REQUEST | NLM_F_ACK, prefix, index: index, sequence: sequence)
    }

    static func route(_ type: UInt16, flags: UInt16, _ prefix: CIDR, index: Int32, sequence: UInt32) -> Message {
        var m = Message(type: type, flags: flags, sequence: sequence)
        m.append8(family(prefix.address))
        m.append8(UInt8(prefix.prefixLength))  // rtm_dst_len
        m.append8(0)  // rtm_src_len
        m.append8(0)  // rtm_tos
        m.append8(RT_TABLE_MAIN)
        m.append8(RTPROT_STATIC)
        m.append8(RT_SCOPE_LINK)
        m.append8(RTN_UNICAST)
        m.append32(0)  // rtm_flags
        m.appendAttribute(RTA_DST, addressBytes(prefix.address))
        m.appendAttribute(RTA_OIF, withUnsafeBytes(of: UInt32(bitPattern: index)) { Array($0) })
        return m
    }

    /// What an NLMSG_ERROR message says about request `sequence`: nil when `buffer` holds no
    /// answer to it, 0 for an ACK, otherwise the (positive) errno. Malformed messages end the scan.
    public static func acknowledgement(in buffer: UnsafeRawBufferPointer, sequence: UInt32) -> Int32? {
        var offset = 0
        while offset + headerSize <= buffer.count {
            let length = Int(buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            guard length >= headerSize, offset + length <= buffer.count else { return nil }
            let type = buffer.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self)
            let seq = buffer.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
            if type == NLMSG_ERROR, seq == sequence, length >= headerSize + 4 {
                let error = buffer.loadUnaligned(fromByteOffset: offset + headerSize, as: Int32.self)
                return error == 0 ? 0 : -error
            }
            offset += (length + 3) & ~3
        }
        return nil
    }
}

/// A blocking NETLINK_ROUTE socket for configuring interfaces at start-up and exit; never on the
/// data path. Each request asks for an ACK and waits for it, so errors carry the kernel's errno.
public final class RouteNetlinkSocket {
    public let fd: Int32
    private var sequence: UInt32 = 1
    private var isOpen = true

    public init() throws(SystemError) {
        fd = try Syscall.check("socket(AF_NETLINK)") { cfz_netlink_route_open() }
    }

    deinit { close() }

    public func close() {
        guard isOpen else { return }
        isOpen = false
        Syscall.close(fd)
    }

    private func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    /// Sends `message` and waits for the kernel's ACK; a NACK throws with its errno and `what`.
    public func perform(_ message: RouteNetlink.Message, _ what: String) throws(SystemError) {
        precondition(isOpen, "perform on a closed RouteNetlinkSocket")
        let seq = message.bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }
        // Control path: a scratch buffer per request is fine. Raw memory, because the closures of
        // Array.withUnsafeBytes rethrow untyped errors.
        let capacity = max(16_384, message.bytes.count)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 8)
        defer { buffer.deallocate() }
        message.bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        let count = message.bytes.count
        let sent = try Syscall.check("send(netlink)") { Glibc.send(fd, buffer.baseAddress, count, 0) }
        guard sent == count else { throw SystemError(errno: EMSGSIZE, call: "send(netlink) \(what)") }
        while true {
            let n = try Syscall.check("recv(netlink)") { recv(fd, buffer.baseAddress, capacity, 0) }
            let reply = UnsafeRawBufferPointer(rebasing: buffer[..<n])
            guard let ack = RouteNetlink.acknowledgement(in: reply, sequence: seq) else { continue }
            if ack != 0 { throw SystemError(errno: ack, call: "rtnetlink \(what)") }
            return
        }
    }

    public func setLink(index: Int32, up: Bool, mtu: Int?) throws(SystemError) {
        try perform(RouteNetlink.setLink(index: index, up: up, mtu: mtu, sequence: nextSequence()),
                    "RTM_NEWLINK(\(up ? "up" : "down")\(mtu.map { " mtu \($0)" } ?? ""))")
    }

    public func deleteLink(index: Int32) throws(SystemError) {
        try perform(RouteNetlink.deleteLink(index: index, sequence: nextSequence()), "RTM_DELLINK")
    }

    public func addAddress(_ address: InterfaceAddress, index: Int32) throws(SystemError) {
        try perform(RouteNetlink.addAddress(address, index: index, sequence: nextSequence()), "RTM_NEWADDR(\(address))")
    }

    /// Adds a route; one that already exists (EEXIST, e.g. the prefix route of an address) is fine.
    public func addRoute(_ prefix: CIDR, index: Int32) throws(SystemError) {
        do {
            try perform(RouteNetlink.addRoute(prefix, index: index, sequence: nextSequence()), "RTM_NEWROUTE(\(prefix))")
        } catch where error.errno == EEXIST {
            return
        }
    }

    /// Deletes a route `addRoute` made; one that is already gone (ESRCH) is fine.
    public func deleteRoute(_ prefix: CIDR, index: Int32) throws(SystemError) {
        do {
            try perform(RouteNetlink.deleteRoute(prefix, index: index, sequence: nextSequence()), "RTM_DELROUTE(\(prefix))")
        } catch where error.errno == ESRCH {
            return
        }
    }
}
