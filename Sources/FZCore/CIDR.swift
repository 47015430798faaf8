/// An address prefix such as `10.0.0.0/8` or `fc00::/7`.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    /// Builds a prefix, masking host bits; nil when the length does not fit the family.
    public init?(address: IPAddress, prefixLength: Int) {
        switch address {
        case .v4(let a):
            guard (0...32).contains(prefixLength) else { return nil }
            self.address = .v4(IPv4Address(a.value & Self.mask32(prefixLength)))
        case .v6(let a):
            guard (0...128).contains(prefixLength) else { return nil }
            let (mh, ml) = Self.mask128(prefixLength)
            self.address = .v6(IPv6Address(high: a.high & mh, low: a.low & ml))
        }
        self.prefixLength = prefixLength
    }

    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address (a host prefix).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let ip = IPAddress(String(parts[0])) else { return nil }
        let length: Int
        if parts.count == 2 {
            guard let n = Int(parts[1]) else { return nil }
            length = n
        } else {
            length = ip.family == .v4 ? 32 : 128
        }
        self.init(address: ip, prefixLength: length)
    }

    public func contains(_ ip: IPAddress) -> Bool {
        switch (address, ip) {
        case (.v4(let net), .v4(let a)):
            return a.value & Self.mask32(prefixLength) == net.value
        case (.v6(let net), .v6(let a)):
            let (mh, ml) = Self.mask128(prefixLength)
            return a.high & mh == net.high && a.low & ml == net.low
        default:
            return false
        }
    }

    public var description: String { "\(address)/\(prefixLength)" }

    static func mask32(_ n: Int) -> UInt32 { n == 0 ? 0 : UInt32.max << (32 - n) }

    static func mask128(_ n: Int) -> (UInt64, UInt64) {
        if n == 0 { return (0, 0) }
        if n <= 64 { return (UInt64.max << (64 - n), 0) }
        if n == 128 { return (UInt64.max, UInt64.max) }
        return (UInt64.max, UInt64.max << (128 - n))
    }
}
