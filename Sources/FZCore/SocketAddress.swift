/// A transport address: IP address and port. A value type used as a dictionary key on the
/// relay's hot paths, so it holds no references.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public var ip: IPAddress
    public var port: UInt16

    public init(ip: IPAddress, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    public init(_ ip: IPv4Address, _ port: UInt16) { self.init(ip: .v4(ip), port: port) }
    public init(_ ip: IPv6Address, _ port: UInt16) { self.init(ip: .v6(ip), port: port) }

    /// Parses `1.2.3.4:5`, `[::1]:5`; with `defaultPort`, also a bare address.
    public init?(_ text: String, defaultPort: UInt16? = nil) {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            guard let ip = IPv6Address(String(text[text.index(after: text.startIndex)..<close])) else { return nil }
            let rest = text[text.index(after: close)...]
            if rest.isEmpty {
                guard let d = defaultPort else { return nil }
                self.init(ip: .v6(ip), port: d)
            } else {
                guard rest.first == ":", let p = UInt16(rest.dropFirst()) else { return nil }
                self.init(ip: .v6(ip), port: p)
            }
            return
        }
        if let ip = IPAddress(text) {
            guard let d = defaultPort else { return nil }
            self.init(ip: ip, port: d)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let ip = IPv4Address(String(text[..<colon])),
            let p = UInt16(text[text.index(after: colon)...])
        else { return nil }
        self.init(ip: .v4(ip), port: p)
    }

    public var family: AddressFamily { ip.family }

    public var description: String {
        switch ip {
        case .v4(let a): "\(a):\(port)"
        case .v6(let a): "[\(a)]:\(port)"
        }
    }
}
