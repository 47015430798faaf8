import Connectivity
import FZControl
import FZCore

extension NodeRelay {
    /// The relay as the connectivity engine uses it: the first address of the portal's list this
    /// host can use (`families`, IPv4 first), with the credentials the portal issued. Nil when no
    /// address parses.
    public init?(_ view: RelayView, families: Set<AddressFamily> = [.v4, .v6]) {
        let addresses = view.addresses.compactMap { SocketAddress($0, defaultPort: 3478) }.filter { families.contains($0.family) }
        guard let address = addresses.first(where: { $0.family == .v4 }) ?? addresses.first else { return nil }
        self.init(id: view.id.rawValue, name: view.name, address: address,
                  credentials: TURNCredentials(username: view.username, password: view.password))
    }
}

extension Connectivity.IceCredentials {
    /// The control protocol's credentials (the portal generates both sides').
    public init(_ c: FZControl.IceCredentials) { self.init(ufrag: c.username, password: c.password) }
}

/// Parses the `candidate:` lines a peer signalled; the ones that do not parse are returned apart
/// (for a log line), never fatal.
public func parseCandidates(_ lines: [String]) -> (candidates: [Candidate], rejected: [String]) {
    var ok: [Candidate] = []
    var bad: [String] = []
    for line in lines.prefix(64) {
        do { ok.append(try Candidate(parsing: line)) } catch { bad.append("\(error)") }
    }
    if lines.count > 64 { bad.append("\(lines.count - 64) candidates beyond the first 64 ignored") }
    return (ok, bad)
}

/// The addresses worth announcing as host candidates: not loopback, not link-local, not one of
/// `excluded` (the tunnel's own addresses), not unspecified.
public func hostCandidateAddresses(_ all: [IPAddress], excluding excluded: [IPAddress] = []) -> [IPAddress] {
    let skip = ["127.0.0.0/8", "169.254.0.0/16", "::1/128", "fe80::/10"].compactMap { CIDR($0) }
    return all.filter { ip in !ip.isUnspecified && !excluded.contains(ip) && !skip.contains { $0.contains(ip) } }
}
