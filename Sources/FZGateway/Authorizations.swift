import FZControl
import FZCore
import Tunnel
import WireGuard

/// What the portal authorized this gateway to carry, and the tunnel changes that follow from it:
/// the pure core of the portal-driven gateway (`authorize`, `revoke`, expiry, and `init` after a
/// reconnect in; peer additions, filter changes and removals out; `now` is a parameter).
///
/// One WireGuard peer per client. Its AllowedIPs are the client's tunnel addresses (so the data
/// plane drops any packet whose inner source is not the client's), and its packet filter is the
/// union of its unexpired grants: each resource's addresses with the authorization's filters
/// (none: every protocol and port). A grant ends at its `expires_at` or at `revoke`; the peer goes
/// when its last grant does, so the client's traffic stops at once.
///
/// Decisions where the protocol leaves room:
/// - the preshared key is fresh for each authorization and WireGuard has one per peer: the latest
///   authorization's key wins (the client uses the latest grant's too), and changing it replaces the
///   peer, so the client handshakes again;
/// - DNS resources are refused (this gateway does not resolve names yet): the portal hears nothing
///   (no `authorized`), so the client gets `access_denied` `offline` after the reply timeout.
public struct Authorizations: Sendable {
    public struct Grant: Sendable, Equatable {
        public var requestId: RequestID
        public var destinations: [CIDR]
        public var filters: [TrafficFilter]
        public var expiresAt: UnixTime
    }

    public struct Client: Sendable, Equatable {
        public var publicKey: WireGuardKey
        public var presharedKey: FZControl.PresharedKey
        public var tunnelAddresses: [CIDR]
        /// The latest authorization's ICE credentials (both sides'): a new pair restarts ICE.
        public var ice: FZControl.IcePair
        public var grants: [ResourceID: Grant]

        /// The union of the grants, for the data plane.
        public var filter: PacketFilter {
            var rules: [PacketFilter.Rule] = []
            for resource in grants.keys.sorted() {
                let grant = grants[resource]!
                let protocols: [PacketFilter.Protocols] = grant.filters.isEmpty ? [.any] : grant.filters.map {
                    switch $0 {
                    case .tcp(let ports): .tcp(ports)
                    case .udp(let ports): .udp(ports)
                    case .icmp: .icmp
                    }
                }
                for destination in grant.destinations {
                    for p in protocols { rules.append(.init(destination: destination, protocols: p)) }
                }
            }
            return PacketFilter(rules: rules)
        }
    }

    public enum Change: Sendable, Equatable {
        /// A new peer for `client` (or a replacement, after `remove`).
        case add(ClientID, Client)
        /// Same keys, other grants: a new packet filter.
        case update(ClientID, Client)
        case remove(ClientID)
    }

    public enum Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        case expired
        case noTunnelAddress
        case unsupportedResource(String)
        case badKey(String)

        public var description: String {
            switch self {
            case .expired: "the authorization has already expired"
            case .noTunnelAddress: "the client has no tunnel address"
            case .unsupportedResource(let r): "resource \(r): DNS resources are not supported by this gateway yet"
            case .badKey(let field): "\(field) is not a usable WireGuard key"
            }
        }
    }

    public private(set) var clients: [ClientID: Client] = [:]

    public init() {}

    /// Takes an `authorize`; the changes to apply, or why it was refused (nothing changes then).
    public mutating func authorize(_ a: Authorize, now: UnixTime) -> Result<[Change], Refusal> {
        var next = clients
        if let refusal = Self.merge(a, into: &next, now: now) { return .failure(refusal) }
        return .success(commit(next))
    }

    /// `revoke`: the client loses the resource at once (and its peer, if that was the last).
    public mutating func revoke(client: ClientID, resource: ResourceID) -> [Change] {
        var next = clients
        next[client]?.grants[resource] = nil
        return commit(next)
    }

    /// Ends every grant whose `expires_at` is at or before `now`.
    public mutating func expire(now: UnixTime) -> [Change] {
        var next = clients
        for id in next.keys { next[id]!.grants = next[id]!.grants.filter { $0.value.expiresAt > now } }
        return commit(next)
    }

    /// The earliest `expires_at` of any grant: when to call `expire` next.
    public var nextExpiry: UnixTime? { clients.values.flatMap { $0.grants.values.map(\.expiresAt) }.min() }

    /// `init` after a (re)connect: the portal's list is the truth. Grants it no longer holds end;
    /// the ones it holds are kept or added. Unchanged peers are not touched, so their tunnels keep
    /// working across the reconnect. Refused entries are returned with the changes.
    public mutating func restore(_ list: [Authorize], now: UnixTime) -> (changes: [Change], refused: [(RequestID, Refusal)]) {
        var next: [ClientID: Client] = [:]
        var refused: [(RequestID, Refusal)] = []
        for a in list {
            if let refusal = Self.merge(a, into: &next, now: now) { refused.append((a.requestId, refusal)) }
        }
        return (commit(next), refused)
    }

    // MARK: -

    private static func merge(_ a: Authorize, into clients: inout [ClientID: Client], now: UnixTime) -> Refusal? {
        guard a.expiresAt > now else { return .expired }
        guard !a.clientTunnelIps.isEmpty else { return .noTunnelAddress }
        guard PublicKey(base64: a.clientPublicKey.base64) != nil else { return .badKey("client_public_key") }
        guard WireGuard.PresharedKey(base64: a.presharedKey.base64) != nil else { return .badKey("preshared_key") }
        let destinations: [CIDR]
        switch a.resource.address {
        case .cidr(let c): destinations = [c]
        case .ip(let ip): destinations = [CIDR(address: ip, prefixLength: ip.family == .v4 ? 32 : 128)!]
        case .dns: return .unsupportedResource(a.resource.id.rawValue)
        }
        let grant = Grant(requestId: a.requestId, destinations: destinations, filters: a.filters, expiresAt: a.expiresAt)
        let addresses = a.clientTunnelIps.map { CIDR(address: $0, prefixLength: $0.family == .v4 ? 32 : 128)! }
        var client = clients[a.clientId] ?? Client(publicKey: a.clientPublicKey, presharedKey: a.presharedKey,
                                                    tunnelAddresses: addresses, ice: a.iceCredentials, grants: [:])
        if client.publicKey != a.clientPublicKey {
            // A new key for the client (a reinstall): the old key's grants do not carry over.
            client.grants = [:]
        }
        client.publicKey = a.clientPublicKey
        client.presharedKey = a.presharedKey
        client.tunnelAddresses = addresses
        client.ice = a.iceCredentials
        client.grants[a.resource.id] = grant
        clients[a.clientId] = client
        return nil
    }

    /// Replaces the state by `next` (clients without grants dropped) and says what changed.
    private mutating func commit(_ next: [ClientID: Client]) -> [Change] {
        let next = next.filter { !$0.value.grants.isEmpty }
        var changes: [Change] = []
        for id in clients.keys.sorted() where next[id] == nil { changes.append(.remove(id)) }
        for id in next.keys.sorted() {
            let new = next[id]!
            guard let old = clients[id] else {
                changes.append(.add(id, new))
                continue
            }
            if old.publicKey != new.publicKey || old.presharedKey != new.presharedKey || old.tunnelAddresses != new.tunnelAddresses
                || old.ice != new.ice
            {
                changes.append(.remove(id))
                changes.append(.add(id, new))
            } else if old.filter != new.filter {
                changes.append(.update(id, new))
            }
        }
        clients = next
        return changes
    }
}
