import FZControl
import FZCore

/// Hands out client tunnel addresses: IPv4 from 100.64.0.0/11 (inside the CGNAT range RFC 6598
/// reserves, as Firezone does) and IPv6 from a unique-local /80 by default.
///
/// Never returns an address in `used`. It continues after the highest address in use, so a
/// freed address is not handed out again until the pool wraps (gateways may still hold state
/// for it). Scanning at most `used.count + 1` candidates always finds a free one when the pool
/// has room, so the cost is bounded by the number of clients, not by the pool size.
public struct AddressAllocator: Sendable {
    public static let defaultIPv4Pool = CIDR("100.64.0.0/11")!
    public static let defaultIPv6Pool = CIDR("fd00:2021:1111::/80")!

    public let ipv4Pool: CIDR
    public let ipv6Pool: CIDR

    public init(ipv4Pool: CIDR = Self.defaultIPv4Pool, ipv6Pool: CIDR = Self.defaultIPv6Pool) {
        precondition(ipv4Pool.address.family == .v4 && ipv4Pool.prefixLength <= 30, "IPv4 pool must be a v4 prefix of /30 or wider")
        precondition(
            ipv6Pool.address.family == .v6 && (64...126).contains(ipv6Pool.prefixLength), "IPv6 pool must be a v6 prefix /64…/126")
        self.ipv4Pool = ipv4Pool
        self.ipv6Pool = ipv6Pool
    }

    /// The next free IPv4 address, skipping the network and broadcast addresses; nil when full.
    public func nextIPv4(used: Set<IPv4Address>) -> IPv4Address? {
        guard case .v4(let net) = ipv4Pool.address else { return nil }
        let size = UInt64(1) << UInt64(32 - ipv4Pool.prefixLength)
        let offsets = Set(used.filter { ipv4Pool.contains(.v4($0)) }.map { UInt64($0.value - net.value) })
        return Self.nextFree(first: 1, last: size - 2, used: offsets).map { IPv4Address(net.value + UInt32($0)) }
    }

    /// The next free IPv6 address, skipping the subnet-router anycast address (offset 0).
    public func nextIPv6(used: Set<IPv6Address>) -> IPv6Address? {
        guard case .v6(let net) = ipv6Pool.address else { return nil }
        let hostBits = UInt64(128 - ipv6Pool.prefixLength)
        let last = hostBits == 64 ? UInt64.max : (UInt64(1) << hostBits) - 1
        let offsets = Set(used.filter { ipv6Pool.contains(.v6($0)) }.map { $0.low &- net.low })
        return Self.nextFree(first: 1, last: last, used: offsets).map { IPv6Address(high: net.high, low: net.low | $0) }
    }

    /// The first offset in `first...last` after the highest used one that is free, wrapping.
    static func nextFree(first: UInt64, last: UInt64, used: Set<UInt64>) -> UInt64? {
        guard last >= first else { return nil }
        let inRange = used.filter { $0 >= first && $0 <= last }
        if UInt64(inRange.count) > last - first { return nil }  // every offset taken
        var candidate = (inRange.max().map { $0 == last ? first : $0 + 1 }) ?? first
        for _ in 0...inRange.count {
            if !inRange.contains(candidate) { return candidate }
            candidate = candidate == last ? first : candidate + 1
        }
        return nil
    }

    // MARK: Allocation by a cursor (O(log n) per client with indexed lookups)

    /// The offsets an allocation may use: 1 …, bounded by the IPv4 pool (the IPv6 pool is at
    /// least as large), skipping the network and broadcast addresses.
    public var offsets: ClosedRange<UInt64> {
        let size = UInt64(1) << UInt64(32 - ipv4Pool.prefixLength)
        return 1...(size - 2)
    }

    /// The offset after `offset`, wrapping to the first.
    public func offset(after offset: UInt64) -> UInt64 {
        offset >= offsets.upperBound || offset < offsets.lowerBound ? offsets.lowerBound : offset + 1
    }

    /// The pair of addresses at `offset` (both pools use the same offset, so a client's IPv4 and
    /// IPv6 addresses correspond).
    public func addresses(at offset: UInt64) -> (IPv4Address, IPv6Address)? {
        guard offsets.contains(offset), case .v4(let n4) = ipv4Pool.address, case .v6(let n6) = ipv6Pool.address else { return nil }
        return (IPv4Address(n4.value + UInt32(offset)), IPv6Address(high: n6.high, low: n6.low | offset))
    }

    /// The offset of `address` in the IPv4 pool, or nil when it is outside.
    public func offset(of address: IPv4Address) -> UInt64? {
        guard case .v4(let n4) = ipv4Pool.address, ipv4Pool.contains(.v4(address)) else { return nil }
        return UInt64(address.value - n4.value)
    }
}
