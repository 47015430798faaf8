import FZCore

/// A CIDR range, a single IP, or a DNS name pattern. On the wire: one string, its kind implied
/// (`10.0.0.0/8`, `10.0.0.5`, `*.corp.example`).
public enum ResourceAddress: Hashable, Sendable, Codable, CustomStringConvertible {
    case cidr(CIDR)
    case ip(IPAddress)
    case dns(DNSPattern)

    public init(parsing text: String) throws(ValidationError) {
        let t = text.trimmingSpaces
        if t.contains("/") {
            guard let c = CIDR(t) else { throw ValidationError(field: "address", reason: "not a CIDR range") }
            // `10.0.0.1/24` is a typo for a host or a range; taking it as 10.0.0.0/24 would grant
            // more than was written.
            guard Self.sameAddress(t, c) else {
                throw ValidationError(field: "address", reason: "\(t) has host bits set (the range is \(c))")
            }
            self = .cidr(c)
        } else if let ip = IPAddress(t) {
            self = .ip(ip)
        } else {
            self = .dns(try DNSPattern(t))
        }
    }

    /// Whether the address part of `text` is the network address of `c` (so that `::1/128` and
    /// `0:0::1/128` are the same range as written).
    static func sameAddress(_ text: String, _ c: CIDR) -> Bool {
        guard let slash = text.firstIndex(of: "/"), let ip = IPAddress(String(text[..<slash])) else { return false }
        return ip == c.address
    }

    public var kind: String {
        switch self {
        case .cidr: "cidr"
        case .ip: "ip"
        case .dns: "dns"
        }
    }

    public var description: String {
        switch self {
        case .cidr(let c): c.description
        case .ip(let a): a.description
        case .dns(let p): p.pattern
        }
    }

    /// True when a packet to `ip` is for this resource (DNS resources are matched by name).
    public func contains(_ ip: IPAddress) -> Bool {
        switch self {
        case .cidr(let c): c.contains(ip)
        case .ip(let a): a == ip
        case .dns: false
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.reason))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// One allowed kind of traffic: `tcp/80`, `udp/5000-5100`, `icmp`.
public enum TrafficFilter: Hashable, Sendable, Codable, CustomStringConvertible {
    case tcp(ClosedRange<UInt16>)
    case udp(ClosedRange<UInt16>)
    case icmp

    public init(parsing text: String) throws(ValidationError) {
        let t = text.trimmingSpaces.lowercased()
        if t == "icmp" {
            self = .icmp
            return
        }
        let parts = t.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == "tcp" || parts[0] == "udp" else {
            throw ValidationError(field: "filters", reason: "expected tcp/PORT[-PORT], udp/PORT[-PORT] or icmp: \(text)")
        }
        let bounds = parts[1].split(separator: "-", omittingEmptySubsequences: false)
        guard (1...2).contains(bounds.count), let lo = UInt16(bounds[0]), let hi = UInt16(bounds.last!), lo >= 1, lo <= hi
        else { throw ValidationError(field: "filters", reason: "bad port range: \(text)") }
        self = parts[0] == "tcp" ? .tcp(lo...hi) : .udp(lo...hi)
    }

    public var description: String {
        func range(_ r: ClosedRange<UInt16>) -> String { r.count == 1 ? "\(r.lowerBound)" : "\(r.lowerBound)-\(r.upperBound)" }
        switch self {
        case .tcp(let r): return "tcp/\(range(r))"
        case .udp(let r): return "udp/\(range(r))"
        case .icmp: return "icmp"
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.reason))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
