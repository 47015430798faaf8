import FZControl
import FZCore

/// The client daemon's decisions, sans-IO: portal messages, packets to addresses no tunnel
/// covers, the engine's link events and `now` in; actions out (messages to the portal, routes,
/// engine changes, held packets to send or to refuse). The daemon (`ClientDaemon`) carries the
/// actions out; everything here is pure and tested without sockets.
///
/// The path of a first packet: it reaches the TUN device through a resource's route, no peer's
/// AllowedIPs cover it (`unrouted`), so it is held and `request_access` goes out (once; again
/// every `retryAfter` while packets keep coming). `access_granted` makes a connection to the
/// gateway (engine: ICE + WireGuard) whose AllowedIPs stay empty until the engine reports a path,
/// so packets keep being held rather than lost in a handshake that has nowhere to go; then the
/// granted prefixes are set and the held packets are sent. `access_denied` refuses the held
/// packets (TCP RST / ICMP unreachable) and refuses new ones for `deniedFor`.
public struct ClientController: Sendable {
    public struct Config: Sendable {
        /// Held packets per resource while its tunnel comes up; later ones are dropped.
        public var heldPackets = 64
        /// A held packet older than this is dropped (the application retransmits).
        public var holdFor: Duration = .seconds(1)
        /// A `request_access` unanswered this long is sent again if packets still wait.
        public var retryAfter: Duration = .seconds(5)
        /// After `access_denied`, packets to the resource are refused without asking again.
        public var deniedFor: Duration = .seconds(5)
        public init() {}
    }

    public enum Action: Sendable, Equatable {
        case send(FromClient)
        case setAddresses(TunnelAddresses)
        case addRoute(CIDR)
        case removeRoute(CIDR)
        /// Every relay the client knows (replaces the engine's list).
        case setRelays([RelayView])
        case connect(gateway: GatewayID, publicKey: WireGuardKey, presharedKey: PresharedKey, ice: IcePair, allowedIPs: [CIDR])
        case setAllowedIPs(GatewayID, [CIDR])
        case addCandidates(GatewayID, [String])
        case disconnect(GatewayID)
        /// Send through the tunnel (it is up now).
        case release([[UInt8]])
        /// Answer each with `Unreachable.reply(to:)`.
        case refuse([[UInt8]])
    }

    public enum AccessState: Sendable, Equatable {
        case requesting(sentAt: Timestamp)
        case granted(GatewayID, until: Timestamp)
        case denied(DenialReason, until: Timestamp)
    }

    /// A resource as `fz-client status` shows it.
    public struct ResourceStatus: Sendable, Equatable {
        public var resource: ResourceView
        public var access: AccessState?
        /// The gateway's tunnel has a path.
        public var connected: Bool
    }

    struct Link: Sendable {
        var publicKey: WireGuardKey
        var presharedKey: PresharedKey
        var ice: IcePair
        var connected = false
    }

    struct Held: Sendable {
        var packets: [[UInt8]] = []
        var arrivals: [Timestamp] = []
    }

    public let config: Config
    public private(set) var tunnel: TunnelAddresses?
    public private(set) var resources: [ResourceID: ResourceView] = [:]
    public private(set) var access: [ResourceID: AccessState] = [:]
    private(set) var links: [GatewayID: Link] = [:]
    private var held: [ResourceID: Held] = [:]
    private var relays: [RelayID: RelayView] = [:]
    private var routes: Set<CIDR> = []
    /// Between `init` and the loss of the portal connection: requests can be sent.
    public private(set) var portalUp = false
    /// Packets dropped: to no resource, over the hold bound, or held too long.
    public private(set) var dropped = (noResource: 0, overflow: 0, stale: 0)

    public init(config: Config = Config()) { self.config = config }

    // MARK: inputs

    public mutating func handle(_ message: ToClient, now: Timestamp, wall: UnixTime) -> [Action] {
        var out: [Action] = []
        switch message {
        case .initialize(let i):
            portalUp = true
            if tunnel != i.tunnel {
                tunnel = i.tunnel
                out.append(.setAddresses(i.tunnel))
            }
            let fresh = Dictionary(i.resources.map { ($0.id, $0) }, uniquingKeysWith: { _, b in b })
            for id in resources.keys where fresh[id] == nil { forget(id, &out) }
            for r in i.resources { update(r, &out) }
            relays = Dictionary(i.relays.map { ($0.id, $0) }, uniquingKeysWith: { _, b in b })
            out.append(.setRelays(relayList))
            // Requests the previous connection did not see answered: ask again. Grants stay (the
            // tunnels keep working while the portal is away).
            for (id, state) in access.sorted(by: { $0.key < $1.key }) {
                if case .requesting = state {
                    access[id] = .requesting(sentAt: now)
                    out.append(.send(.requestAccess(RequestAccess(resourceId: id))))
                }
            }
            updateRoutes(&out)
        case .accessGranted(let g):
            guard resources[g.resourceId] != nil else { break }
            for r in g.relays { relays[r.id] = r }
            if !g.relays.isEmpty { out.append(.setRelays(relayList)) }
            let seconds = max(0, g.expiresAt.seconds - wall.seconds)
            let until = now + .seconds(seconds)
            if case .granted(let previous, _) = access[g.resourceId], previous != g.gatewayId {
                access[g.resourceId] = nil
                prefixesChanged(previous, &out)
            }
            access[g.resourceId] = .granted(g.gatewayId, until: until)
            if let l = links[g.gatewayId], l.publicKey == g.gatewayPublicKey, l.presharedKey == g.presharedKey, l.ice == g.iceCredentials {
                if l.connected {
                    out.append(.setAllowedIPs(g.gatewayId, prefixes(via: g.gatewayId)))
                    release(g.resourceId, &out)
                }
            } else {
                if links[g.gatewayId] != nil { out.append(.disconnect(g.gatewayId)) }
                links[g.gatewayId] = Link(publicKey: g.gatewayPublicKey, presharedKey: g.presharedKey, ice: g.iceCredentials)
                // No AllowedIPs until a path exists: packets wait here, not in a handshake.
                out.append(.connect(gateway: g.gatewayId, publicKey: g.gatewayPublicKey, presharedKey: g.presharedKey,
                                    ice: g.iceCredentials, allowedIPs: []))
            }
        case .accessDenied(let d):
            guard resources[d.resourceId] != nil else { break }
            if case .granted(let gateway, _) = access[d.resourceId] {
                access[d.resourceId] = nil
                prefixesChanged(gateway, &out)
            }
            access[d.resourceId] = .denied(d.reason, until: now + config.deniedFor)
            if let h = held.removeValue(forKey: d.resourceId), !h.packets.isEmpty { out.append(.refuse(h.packets)) }
        case .iceCandidates(let c):
            out.append(.addCandidates(c.gatewayId, c.candidates))
        case .presence(let p):
            if let gateway = p.gatewayId, !p.online { lost(gateway, now: now, &out) }
            if let relay = p.relayId {
                if p.online, let view = p.relay { relays[relay] = view } else if !p.online { relays[relay] = nil }
                out.append(.setRelays(relayList))
            }
        case .resourceUpdated(let u):
            update(u.resource, &out)
            updateRoutes(&out)
        case .resourceRemoved(let r):
            forget(r.resourceId, &out)
            updateRoutes(&out)
        case .error, .pong, .reconnect:
            break
        }
        return out
    }

    /// The portal connection is gone (the session reconnects by itself): tunnels keep working,
    /// but nothing new can be asked for, so requests in flight and their held packets are
    /// refused, and so are new ones until the next `init` — applications fail at once instead of
    /// waiting for a portal that may be away for long.
    public mutating func portalLost(now: Timestamp) -> [Action] {
        portalUp = false
        var refused: [[UInt8]] = []
        for (id, state) in access.sorted(by: { $0.key < $1.key }) {
            guard case .requesting = state else { continue }
            access[id] = nil
            refused += held.removeValue(forKey: id)?.packets ?? []
        }
        return refused.isEmpty ? [] : [.refuse(refused)]
    }

    /// A packet read from TUN that no tunnel covers.
    public mutating func unrouted(_ packet: [UInt8], now: Timestamp) -> [Action] {
        guard let destination = packet.withUnsafeBytes({ Unreachable.destination(of: $0) }), let id = resource(for: destination) else {
            dropped.noResource += 1
            return []
        }
        if !portalUp {
            if case .granted(let gateway, let until) = access[id], until > now {
                if links[gateway]?.connected == true { return [.release([packet])] }
                hold(packet, for: id, now: now)
                return []
            }
            return [.refuse([packet])]
        }
        switch access[id] {
        case .denied(_, let until) where until > now:
            return [.refuse([packet])]
        case .granted(let gateway, let until) where until > now:
            // The tunnel is up but its AllowedIPs are on their way: send it after them.
            if links[gateway]?.connected == true { return [.release([packet])] }
            hold(packet, for: id, now: now)
            return []
        case .requesting:
            hold(packet, for: id, now: now)
            return []
        default:
            access[id] = .requesting(sentAt: now)
            hold(packet, for: id, now: now)
            return [.send(.requestAccess(RequestAccess(resourceId: id)))]
        }
    }

    public enum LinkEvent: Sendable, Equatable {
        case localCandidates([String])
        case connected
        case failed
    }

    public mutating func link(_ gateway: GatewayID, _ event: LinkEvent, now: Timestamp) -> [Action] {
        guard links[gateway] != nil else { return [] }
        var out: [Action] = []
        switch event {
        case .localCandidates(let lines):
            out.append(.send(.iceCandidates(GatewayCandidates(gatewayId: gateway, candidates: lines))))
        case .connected:
            guard links[gateway]?.connected == false else { break }
            links[gateway]!.connected = true
            out.append(.setAllowedIPs(gateway, prefixes(via: gateway)))
            for id in resources(via: gateway) { release(id, &out) }
        case .failed:
            lost(gateway, now: now, &out)
        }
        return out
    }

    public mutating func handleTimeout(now: Timestamp) -> [Action] {
        var out: [Action] = []
        for (id, h) in held {
            let keep = h.arrivals.firstIndex { now - $0 < config.holdFor } ?? h.arrivals.count
            if keep > 0 {
                dropped.stale += keep
                held[id]!.packets.removeFirst(keep)
                held[id]!.arrivals.removeFirst(keep)
            }
            if held[id]!.packets.isEmpty { held[id] = nil }
        }
        for (id, state) in access.sorted(by: { $0.key < $1.key }) {
            switch state {
            case .requesting(let sentAt) where now - sentAt >= config.retryAfter:
                if held[id] != nil {
                    access[id] = .requesting(sentAt: now)
                    out.append(.send(.requestAccess(RequestAccess(resourceId: id))))
                } else {
                    access[id] = nil  // nobody waits any more; the next packet asks again
                }
            case .granted(let gateway, let until) where until <= now:
                access[id] = nil
                prefixesChanged(gateway, &out)
            case .denied(_, let until) where until <= now:
                access[id] = nil
            default:
                break
            }
        }
        return out
    }

    public var nextDeadline: Timestamp {
        var d = Timestamp.distantFuture
        for h in held.values { if let first = h.arrivals.first { d = min(d, first + config.holdFor) } }
        for state in access.values {
            switch state {
            case .requesting(let sentAt): d = min(d, sentAt + config.retryAfter)
            case .granted(_, let until), .denied(_, let until): d = min(d, until)
            }
        }
        return d
    }

    public var status: [ResourceStatus] {
        resources.values.sorted { $0.id < $1.id }.map { r in
            var connected = false
            if case .granted(let g, _) = access[r.id] { connected = links[g]?.connected ?? false }
            return ResourceStatus(resource: r, access: access[r.id], connected: connected)
        }
    }

    /// The gateway a resource is granted through, if any.
    public func gateway(of resource: ResourceID) -> GatewayID? {
        if case .granted(let g, _) = access[resource] { return g }
        return nil
    }

    // MARK: internals

    private var relayList: [RelayView] { relays.values.sorted { $0.id < $1.id } }

    /// The prefixes a resource puts in the routing table and in its gateway's AllowedIPs. DNS
    /// resources have none here (the client does not resolve names yet).
    static func prefixes(of r: ResourceView) -> [CIDR] {
        switch r.address {
        case .cidr(let c): return [c]
        case .ip(let ip): return CIDR(address: ip, prefixLength: ip.family == .v4 ? 32 : 128).map { [$0] } ?? []
        case .dns: return []
        }
    }

    /// The resource whose prefix covers `ip` most specifically.
    func resource(for ip: IPAddress) -> ResourceID? {
        var best: (ResourceID, Int)?
        for r in resources.values {
            for c in Self.prefixes(of: r) where c.contains(ip) {
                if best == nil || c.prefixLength > best!.1 || (c.prefixLength == best!.1 && r.id < best!.0) { best = (r.id, c.prefixLength) }
            }
        }
        return best?.0
    }

    private func resources(via gateway: GatewayID) -> [ResourceID] {
        access.compactMap { id, s in
            if case .granted(let g, _) = s, g == gateway { return id }
            return nil
        }.sorted()
    }

    private func prefixes(via gateway: GatewayID) -> [CIDR] {
        var seen = Set<CIDR>()
        var out: [CIDR] = []
        for id in resources(via: gateway) {
            for c in resources[id].map(Self.prefixes) ?? [] where seen.insert(c).inserted { out.append(c) }
        }
        return out
    }

    /// The set of resources granted through `gateway` changed: its AllowedIPs follow, and a
    /// connection with nothing left to carry goes.
    private mutating func prefixesChanged(_ gateway: GatewayID, _ out: inout [Action]) {
        guard let l = links[gateway] else { return }
        if resources(via: gateway).isEmpty {
            links[gateway] = nil
            out.append(.disconnect(gateway))
        } else if l.connected {
            out.append(.setAllowedIPs(gateway, prefixes(via: gateway)))
        }
    }

    /// The gateway went offline or every path to it failed: ask again for what it carried (the
    /// portal picks another gateway of the Site when there is one).
    private mutating func lost(_ gateway: GatewayID, now: Timestamp, _ out: inout [Action]) {
        guard links.removeValue(forKey: gateway) != nil else { return }
        out.append(.disconnect(gateway))
        for id in access.keys.sorted() {
            guard case .granted(let g, _) = access[id], g == gateway else { continue }
            access[id] = .requesting(sentAt: now)
            out.append(.send(.requestAccess(RequestAccess(resourceId: id))))
        }
    }

    private mutating func update(_ r: ResourceView, _ out: inout [Action]) {
        let old = resources[r.id]
        resources[r.id] = r
        guard let old, old != r, case .granted(let gateway, _) = access[r.id] else { return }
        if old.siteId != r.siteId {
            // Another Site's gateways serve it now: the grant is void.
            access[r.id] = nil
            prefixesChanged(gateway, &out)
        } else if Self.prefixes(of: old) != Self.prefixes(of: r), links[gateway]?.connected == true {
            out.append(.setAllowedIPs(gateway, prefixes(via: gateway)))
        }
    }

    private mutating func forget(_ id: ResourceID, _ out: inout [Action]) {
        guard resources.removeValue(forKey: id) != nil else { return }
        let state = access.removeValue(forKey: id)
        if case .granted(let gateway, _) = state { prefixesChanged(gateway, &out) }
        if let h = held.removeValue(forKey: id), !h.packets.isEmpty { out.append(.refuse(h.packets)) }
    }

    private mutating func updateRoutes(_ out: inout [Action]) {
        var wanted = Set<CIDR>()
        for r in resources.values { wanted.formUnion(Self.prefixes(of: r)) }
        for c in routes.subtracting(wanted).sorted(by: { $0.description < $1.description }) { out.append(.removeRoute(c)) }
        for c in wanted.subtracting(routes).sorted(by: { $0.description < $1.description }) { out.append(.addRoute(c)) }
        routes = wanted
    }

    private mutating func hold(_ packet: [UInt8], for id: ResourceID, now: Timestamp) {
        var h = held[id] ?? Held()
        guard h.packets.count < config.heldPackets else {
            dropped.overflow += 1
            return
        }
        h.packets.append(packet)
        h.arrivals.append(now)
        held[id] = h
    }

    private mutating func release(_ id: ResourceID, _ out: inout [Action]) {
        if let h = held.removeValue(forKey: id), !h.packets.isEmpty { out.append(.release(h.packets)) }
    }
}
