#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 address stored in host byte order so comparisons and masks are plain integer operations.
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad text (`192.0.2.1`); nil for anything else.
    public init?(_ text: String) {
        var addr = in_addr()
        guard inet_pton(AF_INET, text, &addr) == 1 else { return nil }
        value = UInt32(bigEndian: addr.s_addr)
    }

    /// The four octets in network order.
    public var octets: (UInt8, UInt8, UInt8, UInt8) {
        (UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
         UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value))
    }

    public static let any = IPv4Address(0)
    public static let loopback = IPv4Address(127, 0, 0, 1)

    public var description: String {
        let o = octets
        return "\(o.0).\(o.1).\(o.2).\(o.3)"
    }

    public static func < (l: Self, r: Self) -> Bool { l.value < r.value }
}

/// An IPv6 address as two host-order 64-bit halves (`high` holds bytes 0-7).
public struct IPv6Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Builds from 16 bytes in network order.
    public init<C: Collection>(bytes: C) where C.Element == UInt8 {
        precondition(bytes.count == 16, "IPv6 address needs 16 bytes")
        var h: UInt64 = 0
        var l: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
        }
        high = h
        low = l
    }

    /// Parses any RFC 4291 text form (`::1`, `::ffff:127.0.0.1`, `2001:db8::1`); nil otherwise.
    public init?(_ text: String) {
        var addr = in6_addr()
        guard inet_pton(AF_INET6, text, &addr) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &addr) { Array($0) }
        self.init(bytes: bytes)
    }

    /// The 16 bytes in network order.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            out[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i)))
            out[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i)))
        }
        return out
    }

    public static let any = IPv6Address(high: 0, low: 0)
    public static let loopback = IPv6Address(high: 0, low: 1)

    public var description: String {
        var addr = in6_addr()
        withUnsafeMutableBytes(of: &addr) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count)) != nil else { return "?" }
        return String(cString: buf)
    }

    public static func < (l: Self, r: Self) -> Bool { (l.high, l.low) < (r.high, r.low) }
}

/// The address family of a STUN/TURN address (RFC 8489 §14.1 codes 0x01 and 0x02).
public enum AddressFamily: UInt8, Hashable, Sendable, CustomStringConvertible {
    case v4 = 0x01
    case v6 = 0x02

    public var description: String { self == .v4 ? "IPv4" : "IPv6" }
}

/// An IP address of either family.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    /// Parses IPv4 or IPv6 text; nil for anything else.
    public init?(_ text: String) {
        if let a = IPv4Address(text) {
            self = .v4(a)
        } else if let a = IPv6Address(text) {
            self = .v6(a)
        } else {
            return nil
        }
    }

    public var family: AddressFamily {
        switch self {
        case .v4: .v4
        case .v6: .v6
        }
    }

    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }

    /// True for the unspecified address of either family (`0.0.0.0`, `::`).
    public var isUnspecified: Bool {
        switch self {
        case .v4(let a): a.value == 0
        case .v6(let a): a.high == 0 && a.low == 0
        }
    }

    /// The IPv4 address an IPv6 address carries in one of the well-known embedding forms, if any.
    ///
    /// Relays must check peers by the IPv4 address they really reach: IPv4-mapped (`::ffff:a.b.c.d`),
    /// IPv4-compatible (`::a.b.c.d`, deprecated by RFC 4291 §2.5.5.1), NAT64 well-known prefix
    /// (`64:ff9b::/96`, RFC 6052) and 6to4 (`2002:AABB:CCDD::/48`, RFC 3056). coturn's
    /// CVE-2020-26262 and CVE-2026-27624 were bypasses through exactly these forms.
    public var embeddedIPv4: IPv4Address? {
        guard case .v6(let a) = self else { return nil }
        let low32 = IPv4Address(UInt32(truncatingIfNeeded: a.low))
        if a.high == 0 && a.low >> 32 == 0xFFFF { return low32 }  // ::ffff:0:0/96
        if a.high == 0 && a.low >> 32 == 0 && a.low > 1 { return low32 }  // ::/96 minus :: and ::1
        if a.high == 0x0064_FF9B_0000_0000 && a.low >> 32 == 0 { return low32 }  // 64:ff9b::/96
        if a.high >> 48 == 0x2002 { return IPv4Address(UInt32(truncatingIfNeeded: a.high >> 16)) }  // 2002::/16
        return nil
    }
}
