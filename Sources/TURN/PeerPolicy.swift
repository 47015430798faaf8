import FZCore

/// Which peer addresses a relay may send to.
///
/// Relaying into the relay's own networks is the classic TURN attack (an attacker on the internet
/// reaches `169.254.169.254` or `127.0.0.1` through the relay), so the default denies every
/// special-purpose range in `facts.md`. Addresses are normalised first: an IPv6 address that
/// carries an IPv4 address (mapped, compatible, NAT64, 6to4) is judged as that IPv4 address as
/// well as in its own right, which closes the bypasses behind coturn's CVE-2020-26262 and
/// CVE-2026-27624. Operator rules win in this order: `--deny-peer`, then `--allow-peer` /
/// `--allow-loopback-peers`, then the defaults.
public struct PeerPolicy: Sendable, Hashable {
    public var allow: [CIDR]
    public var deny: [CIDR]
    public var defaultDeny: [CIDR]
    /// Transport addresses that are never valid peers whatever the rules say (the relay's own
    /// listening sockets: relaying to them would loop).
    public var forbiddenTransports: Set<SocketAddress>

    public init(allow: [CIDR] = [], deny: [CIDR] = [], defaultDeny: [CIDR] = PeerPolicy.defaultDenyList,
                forbiddenTransports: Set<SocketAddress> = []) {
        self.allow = allow
        self.deny = deny
        self.defaultDeny = defaultDeny
        self.forbiddenTransports = forbiddenTransports
    }

    /// The ranges denied unless an operator allows them (facts.md, "Peer deny-list").
    public static let defaultDenyList: [CIDR] = [
        "0.0.0.0/8", "127.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  // documentation (RFC 5737)
        "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
        "2001:db8::/32",  // documentation (RFC 3849)
    ].map { CIDR($0)! }

    /// The ranges `--allow-loopback-peers` opens.
    public static let loopback: [CIDR] = [CIDR("127.0.0.0/8")!, CIDR("::1/128")!]

    /// Whether a peer IP address may be relayed to. It runs for every Send indication, so it
    /// looks at the address and its embedded IPv4 form one by one rather than through an array.
    public func permits(_ ip: IPAddress) -> Bool {
        let embedded = ip.embeddedIPv4.map { IPAddress.v4($0) }
        func denied(_ f: IPAddress) -> Bool { deny.contains { $0.contains(f) } }
        func allowed(_ f: IPAddress) -> Bool { allow.contains { $0.contains(f) } }
        func deniedByDefault(_ f: IPAddress) -> Bool { defaultDeny.contains { $0.contains(f) } && !allowed(f) }
        if denied(ip) || embedded.map(denied) == true { return false }
        // An explicit allow must cover every form the address takes, so allowing `::ffff:0:0/96`
        // does not silently open 127.0.0.1 through its mapped spelling.
        if allowed(ip) && embedded.map(allowed) != false { return true }
        if deniedByDefault(ip) || embedded.map(deniedByDefault) == true { return false }
        return true
    }

    /// Whether a peer transport address may be relayed to.
    public func permits(_ address: SocketAddress) -> Bool {
        if forbiddenTransports.contains(address) { return false }
        if let v4 = address.ip.embeddedIPv4, forbiddenTransports.contains(SocketAddress(v4, address.port)) {
            return false
        }
        return permits(address.ip)
    }
}
