import FZControl
import FZCore
import Logging
import Prometheus
import Portal
import Synchronization
import FZCrypto

/// Tunables of the control channel.
public struct ControlConfiguration: Sendable {
    /// How long minted TURN REST credentials stay valid (capped by the peer's token expiry).
    public var relayCredentialLifetime: Duration
    /// How long an authorization lasts (capped by the client's token expiry).
    public var authorizationLifetime: Duration
    /// How long a gateway has to answer `authorize` before the client is told `offline`.
    public var gatewayReplyTimeout: Duration
    /// The largest text message accepted from a peer.
    public var maxMessageBytes: Int
    /// WebSocket ping period; a peer that misses a pong by the next ping is closed (and offline).
    public var heartbeat: Duration
    /// Distinct public keys one token may register per hour (gateways and clients): a stolen
    /// token cannot fill the database with fresh keys. Reconnects with a known key are free.
    public var maxNewKeysPerTokenPerHour: Int = 100

    public init(
        relayCredentialLifetime: Duration = .seconds(12 * 3600), authorizationLifetime: Duration = .seconds(12 * 3600),
        gatewayReplyTimeout: Duration = .seconds(10), maxMessageBytes: Int = 16 * 1024, heartbeat: Duration = .seconds(15)
    ) {
        self.relayCredentialLifetime = relayCredentialLifetime
        self.authorizationLifetime = authorizationLifetime
        self.gatewayReplyTimeout = gatewayReplyTimeout
        self.maxMessageBytes = maxMessageBytes
        self.heartbeat = heartbeat
    }
}

/// Who a connecting peer is, as established from its token and query parameters.
enum PeerIdentity: Sendable {
    case gateway(site: SiteID, name: String, publicKey: WireGuardKey)
    case client(actor: ActorID, name: String, publicKey: WireGuardKey, sessionExpiresAt: UnixTime?)
    case relay(name: String, region: String, addresses: [String])
}

/// The control plane's live state: connected peers (presence), pending and granted
/// authorizations. Decisions come from `Portal` (PolicyEvaluator, GatewaySelector,
/// RelayCredentials); the broker only routes messages. Each peer has an outbox (an AsyncStream
/// drained by its connection), so the actor never waits on a socket.
public actor Broker {
    typealias PeerID = UInt64

    enum Kind {
        case gateway(Gateway)
        case client(Client, source: IPAddress?, sessionExpiresAt: UnixTime?)
        case relay(Relay)
    }

    struct Peer {
        var kind: Kind
        var outbox: AsyncStream<Outgoing>.Continuation
        /// The token the connection authenticated with (revoking it closes the connection).
        var token: TokenID? = nil
        /// When that token expires: the connection is closed then (`token_expired`), and no
        /// message is acted on after it.
        var expiresAt: UnixTime? = nil
        /// For a client: the resources it was last told it may see.
        var visible: [ResourceID: ResourceView] = [:]
    }

    struct FlowKey: Hashable {
        var client: ClientID
        var resource: ResourceID
    }

    /// An authorization sent to a gateway, granted (in `flows`) or awaiting its reply (`pending`).
    struct Flow {
        var authorize: Authorize
        var gateway: GatewayID
        var siteId: SiteID
        var actor: ActorID
        var source: IPAddress?
        /// The client token the request came with.
        var token: TokenID? = nil
        /// The token of the gateway connection that accepted it: only a connection with the same
        /// token gets it back in `init` (a stolen public key alone gets no preshared keys).
        var gatewayToken: TokenID? = nil
        /// When the client asked (for the intent latency metric).
        var startedAt: ContinuousClock.Instant? = nil
        /// The client connection that asked: a later request on the same connection to the same
        /// gateway reuses this flow's credentials.
        var clientPeer: PeerID? = nil
    }

    enum BrokerError: Error, CustomStringConvertible {
        case alreadyConnected
        case registrationLimit(Int)
        var description: String {
            switch self {
            case .alreadyConnected: "a peer with this public key is connected now (one connection per key)"
            case .registrationLimit(let n): "this token registered \(n) public keys in the last hour, the limit; reconnect with a known key or wait"
            }
        }
    }

    let store: any PortalStore
    let clock: WallClock
    let config: ControlConfiguration
    let logger: Logger
    let metrics: PortalMetrics

    private var nextPeerID: PeerID = 0
    private var peers: [PeerID: Peer] = [:]
    private var gatewayPeers: [GatewayID: PeerID] = [:]
    private var clientPeers: [ClientID: PeerID] = [:]
    private var relayPeers: [RelayID: PeerID] = [:]
    /// Gateways and clients connected (or connecting) now, by role and public key.
    private var keyPeers: [String: PeerID] = [:]
    private var connectingKeys: Set<String> = []
    /// Per token: the public keys it registered and when they were first seen (pruned after an hour).
    private var tokenKeys: [TokenID: [String: ContinuousClock.Instant]] = [:]
    private var selector = GatewaySelector()
    private var pending: [RequestID: Flow] = [:]
    private var flows: [FlowKey: Flow] = [:]
    private var turnSecret: String?
    private let drainingFlag = Atomic<Bool>(false)
    private var resyncTask: Task<Void, Never>?

    public init(
        store: any PortalStore, clock: WallClock, config: ControlConfiguration = ControlConfiguration(),
        logger: Logger = Logger(label: "fz-portal.broker"), metrics: PortalMetrics = PortalMetrics(registry: PrometheusCollectorRegistry())
    ) {
        self.metrics = metrics
        self.store = store
        self.clock = clock
        self.config = config
        self.logger = logger
    }

    // MARK: Presence

    /// Registers the peer in storage, sends its `init`, and tells affected peers it is online.
    func connect(
        _ identity: PeerIdentity, source: IPAddress?, token: TokenID? = nil, tokenExpiresAt: UnixTime? = nil,
        outbox: AsyncStream<Outgoing>.Continuation
    ) async throws -> PeerID {
        // One live connection per public key. A second one with the same token is the same
        // principal coming back before its old connection is known dead (a NAT rebinding, a
        // new network, a laptop waking up: the heartbeat would take two periods to notice), and
        // replaces it. With another token (a copy of the key) it is refused, and never receives
        // what the first one's requests are answered with.
        let key = Self.key(identity)
        if let key {
            if let old = keyPeers[key], let token, peers[old]?.token == token, !connectingKeys.contains(key) {
                logger.notice("the same key and token connected again: replacing the old connection",
                              metadata: ["peer": "\(describe(peers[old]!.kind))"])
                peers[old]!.outbox.yield(.close(reason: "replaced by a newer connection of this key and token"))
                disconnect(old)
            }
            guard keyPeers[key] == nil, !connectingKeys.contains(key) else { throw BrokerError.alreadyConnected }
            connectingKeys.insert(key)
        }
        defer { if let key { connectingKeys.remove(key) } }
        if let key, let token, try await !isKnown(identity), !admitsKey(key, token: token) {
            throw BrokerError.registrationLimit(config.maxNewKeysPerTokenPerHour)
        }
        let secret = try await secret()
        let kind: Kind
        switch identity {
        case .gateway(let site, let name, let key):
            kind = .gateway(try await store.registerGateway(site: site, name: name, publicKey: key))
        case .client(let actor, let name, let key, let end):
            let client = try await store.registerClient(actor: actor, name: name, publicKey: key, allocator: AddressAllocator())
            kind = .client(client, source: source, sessionExpiresAt: end)
        case .relay(let name, let region, let addresses):
            kind = .relay(try await store.registerRelay(name: name, region: region, addresses: addresses))
        }
        // What a client may see is read before the peer becomes visible (no await after that).
        var visible: [ResourceView] = []
        if case .client(let client, _, _) = kind { visible = try await visibleResources(actor: client.actorId) }

        nextPeerID += 1
        let id = nextPeerID
        if let key { keyPeers[key] = id }
        peers[id] = Peer(kind: kind, outbox: outbox, token: token, expiresAt: tokenExpiresAt, visible: Dictionary(visible.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }))
        countPeers()
        let now = clock.now()
        switch kind {
        case .gateway(let g):
            gatewayPeers[g.id] = id
            let auths = flows.values.filter { $0.gateway == g.id && $0.authorize.expiresAt > now && $0.gatewayToken == token }.map(\.authorize)
            send(id, ToGateway.initialize(GatewayInit(gatewayId: g.id, siteId: g.siteId, relays: relays(for: g.id.rawValue, secret: secret, end: nil), authorizations: auths)))
            let interested = Set(flows.values.filter { $0.siteId == g.siteId }.map(\.authorize.clientId))
            for c in interested { if let p = clientPeers[c] { send(p, ToClient.presence(Presence(gatewayId: g.id, online: true))) } }
        case .client(let c, _, let end):
            clientPeers[c.id] = id
            send(id, ToClient.initialize(ClientInit(
                clientId: c.id, actorId: c.actorId, tunnel: TunnelAddresses(ipv4: c.ipv4, ipv6: c.ipv6),
                resources: visible, relays: relays(for: c.id.rawValue, secret: secret, end: end))))
        case .relay(let r):
            relayPeers[r.id] = id
            send(id, ToRelay.initialize(RelayInit(relayId: r.id, name: r.name, region: r.region, addresses: r.addresses, turnSecret: Secret(secret))))
            for (pid, peer) in peers where pid != id {
                let presence = relayView(r, for: peer.kind, secret: secret).map { Presence(relayId: r.id, online: true, relay: $0) }
                switch (peer.kind, presence) {
                case (.client, let p?): send(pid, ToClient.presence(p))
                case (.gateway, let p?): send(pid, ToGateway.presence(p))
                default: break
                }
            }
        }
        if isDraining {  // connected while shutting down: tell it to come back at once
            outbox.yield(.text(ControlCodec.encode(ToClient.reconnect)))
            outbox.finish()
        }
        if let end = tokenExpiresAt {
            let wait = Duration.seconds(max(0, end.seconds - now.seconds))
            Task { [weak self] in
                try? await Task.sleep(for: wait)
                await self?.tokenExpired(id)
            }
        }
        logger.info("peer connected", metadata: ["peer": "\(describe(kind))"])
        return id
    }

    /// Forgets the peer, ends its outbox, and tells affected peers it is offline.
    func disconnect(_ id: PeerID) {
        guard let peer = peers.removeValue(forKey: id) else { return }
        peer.outbox.finish()
        if let key = Self.key(peer.kind), keyPeers[key] == id { keyPeers[key] = nil }
        countPeers()
        switch peer.kind {
        case .gateway(let g):
            guard gatewayPeers[g.id] == id else { return }  // replaced by a newer connection
            gatewayPeers[g.id] = nil
            for (rid, flow) in pending where flow.gateway == g.id {
                pending[rid] = nil
                deny(flow.authorize.clientId, flow.authorize.resource.id, .offline, since: flow.startedAt)
            }
            let affected = Set(flows.values.filter { $0.gateway == g.id }.map(\.authorize.clientId))
            for c in affected { if let p = clientPeers[c] { send(p, ToClient.presence(Presence(gatewayId: g.id, online: false))) } }
        case .client(let c, _, _):
            if clientPeers[c.id] == id { clientPeers[c.id] = nil }
        case .relay(let r):
            guard relayPeers[r.id] == id else { return }
            relayPeers[r.id] = nil
            for (pid, p) in peers {
                switch p.kind {
                case .client: send(pid, ToClient.presence(Presence(relayId: r.id, online: false)))
                case .gateway: send(pid, ToGateway.presence(Presence(relayId: r.id, online: false)))
                case .relay: break
                }
            }
        }
        logger.info("peer disconnected", metadata: ["peer": "\(describe(peer.kind))"])
    }

    /// True once `goingAway()` ran: connections whose outbox ends close with 1001 (going away).
    nonisolated var isDraining: Bool { drainingFlag.load(ordering: .acquiring) }

    /// The portal is shutting down: every connected peer gets `{"v":1,"type":"reconnect"}` as
    /// its last message, then its connection is closed with 1001 (going away). New work is
    /// refused from here on.
    public func goingAway() {
        drainingFlag.store(true, ordering: .releasing)
        for peer in peers.values {
            peer.outbox.yield(.text(ControlCodec.encode(ToClient.reconnect)))
            peer.outbox.finish()
        }
    }

    /// How many peers are connected now.
    public var connectedPeers: Int { peers.count }

    /// Ids of the gateways and relays connected now (for tests and metrics).
    public func online() -> (gateways: Set<GatewayID>, relays: Set<RelayID>) {
        (Set(gatewayPeers.keys), Set(relayPeers.keys))
    }

    // MARK: Messages

    func handle(_ id: PeerID, _ message: PeerMessage) async {
        guard let peer = peers[id], !isDraining else { return }
        // Checked on every message too (not only by the timer): a wall clock that jumped must
        // not let an expired token's connection make one more intent.
        if let end = peer.expiresAt, clock.now() >= end { return tokenExpired(id) }
        switch (message, peer.kind) {
        case (.client(.ping), .client): send(id, ToClient.pong)
        case (.gateway(.ping), .gateway): send(id, ToGateway.pong)
        case (.relay(.ping), .relay): send(id, ToRelay.pong)
        case (.client(.requestAccess(let r)), .client(let client, let source, let end)):
            await requestAccess(peer: id, client: client, source: source, sessionEnd: end, resourceID: r.resourceId, token: peer.token)
        case (.gateway(.authorized(let a)), .gateway(let g)):
            authorized(gateway: g, requestID: a.requestId)
        case (.client(.iceCandidates(let m)), .client(let c, _, _)):
            let gid = m.gatewayId
            guard flows.values.contains(where: { $0.authorize.clientId == c.id && $0.gateway == gid }), let gp = gatewayPeers[gid] else {
                return send(id, ToClient.error(ErrorMessage(code: ErrorMessage.unknownPeer, message: "no authorization with gateway \(gid)")))
            }
            send(gp, ToGateway.iceCandidates(ClientCandidates(clientId: c.id, candidates: m.candidates)))
        case (.gateway(.iceCandidates(let m)), .gateway(let g)):
            let cid = m.clientId
            guard flows.values.contains(where: { $0.authorize.clientId == cid && $0.gateway == g.id }), let cp = clientPeers[cid] else {
                return send(id, ToGateway.error(ErrorMessage(code: ErrorMessage.unknownPeer, message: "no authorization for client \(cid)")))
            }
            send(cp, ToClient.iceCandidates(GatewayCandidates(gatewayId: g.id, candidates: m.candidates)))
        default:
            // The decoder types messages by the endpoint they came in on: this cannot happen.
            logger.error("message from the wrong kind of peer", metadata: ["peer": "\(describe(peer.kind))"])
        }
    }

    private func requestAccess(peer: PeerID, client: Client, source: IPAddress?, sessionEnd: UnixTime?, resourceID: ResourceID, token: TokenID?) async {
        let now = clock.now()
        let started = ContinuousClock.now
        let resource: Resource
        let decision: PolicyDecision
        do {
            guard let r = try await store.resource(resourceID) else { return deny(client.id, resourceID, .notFound, since: started) }
            resource = r
            let groups = try await store.groupIDs(ofActor: client.actorId)
            let policies = try await store.policies(forResource: resourceID)
            decision = PolicyEvaluator.evaluate(resource: resourceID, actorGroups: groups, source: source, now: now, policies: policies)
        } catch {
            logger.error("request_access failed", metadata: ["error": "\(error)"])
            return send(peer, ToClient.error(ErrorMessage(code: ErrorMessage.internalError, message: "try again")))
        }
        guard case .allowed = decision else { return deny(client.id, resourceID, .forbidden, since: started) }
        guard peers[peer] != nil else { return }
        let online = gatewayPeers.compactMap { gid, pid -> GatewayID? in
            if case .gateway(let g) = peers[pid]?.kind, g.siteId == resource.siteId { return gid }
            return nil
        }
        guard let gid = selector.select(site: resource.siteId, online: online), let gpeer = gatewayPeers[gid] else {
            return deny(client.id, resourceID, .offline, since: started)
        }
        var expiry = now + config.authorizationLifetime
        if let end = sessionEnd, end < expiry { expiry = end }
        let requestID = RequestID.random(prefix: "req")
        // One connection per client and gateway: a second resource through the same gateway gets
        // the credentials and preshared key of the connection that exists, so neither side
        // replaces its peer (a WireGuard handshake and an ICE restart per grant otherwise).
        // Only for the same client connection and an unexpired grant: a client that restarted or
        // reconnected starts afresh on both sides.
        let reusable = { (f: Flow) in f.clientPeer == peer && f.gateway == gid && f.authorize.expiresAt > now }
        let existing = (flows.values.first(where: reusable) ?? pending.values.first(where: reusable))?.authorize
        let auth = Authorize(
            requestId: requestID, clientId: client.id, clientPublicKey: client.publicKey,
            clientTunnelIps: [.v4(client.ipv4), .v6(client.ipv6)], resource: ResourceView(resource),
            filters: resource.filters, expiresAt: expiry,
            iceCredentials: existing?.iceCredentials ?? IcePair(client: .random(), gateway: .random()),
            presharedKey: existing?.presharedKey ?? .random())
        pending[requestID] = Flow(
            authorize: auth, gateway: gid, siteId: resource.siteId, actor: client.actorId, source: source, token: token, startedAt: started,
            clientPeer: peer)
        send(gpeer, ToGateway.authorize(auth))
        let timeout = config.gatewayReplyTimeout
        Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expire(requestID)
        }
    }

    private func expire(_ requestID: RequestID) {
        guard let flow = pending.removeValue(forKey: requestID) else { return }
        deny(flow.authorize.clientId, flow.authorize.resource.id, .offline, since: flow.startedAt)
    }

    private func authorized(gateway: Gateway, requestID: RequestID) {
        guard var flow = pending[requestID], flow.gateway == gateway.id else {
            return sendTo(gateway: gateway.id, .error(ErrorMessage(code: ErrorMessage.unknownRequest, message: "no pending request \(requestID)")))
        }
        pending[requestID] = nil
        flow.gatewayToken = gatewayPeers[gateway.id].flatMap { peers[$0]?.token }
        let a = flow.authorize
        let key = FlowKey(client: a.clientId, resource: a.resource.id)
        // A new authorization for the same client and resource replaces the old one; a different
        // gateway that held the old one drops it.
        if let old = flows[key], old.gateway != gateway.id {
            sendTo(gateway: old.gateway, .revoke(Revoke(clientId: a.clientId, resourceId: a.resource.id)))
        }
        flows[key] = flow
        metrics.intent(nil, since: flow.startedAt)
        guard let cp = clientPeers[a.clientId], case .client(_, _, let end) = peers[cp]?.kind, let secret = turnSecret else { return }
        send(cp, ToClient.accessGranted(AccessGranted(
            resourceId: a.resource.id, gatewayId: gateway.id, gatewayPublicKey: gateway.publicKey, siteId: gateway.siteId,
            expiresAt: a.expiresAt, iceCredentials: a.iceCredentials, presharedKey: a.presharedKey,
            relays: relays(for: a.clientId.rawValue, secret: secret, end: end))))
    }

    /// The admin API removed these policies: authorizations no remaining policy grants are
    /// revoked at their gateways.
    public func policiesRemoved(_ policies: [Policy]) async {
        let resources = Set(policies.map(\.resourceId))
        let affected = flows.filter { resources.contains($0.key.resource) }
        let now = clock.now()
        for (key, flow) in affected {
            let stillAllowed: Bool
            do {
                if try await store.resource(key.resource) == nil {
                    stillAllowed = false
                } else {
                    let groups = try await store.groupIDs(ofActor: flow.actor)
                    let remaining = try await store.policies(forResource: key.resource)
                    let d = PolicyEvaluator.evaluate(resource: key.resource, actorGroups: groups, source: flow.source, now: now, policies: remaining)
                    if case .allowed = d { stillAllowed = true } else { stillAllowed = false }
                }
            } catch {
                stillAllowed = false  // fail closed
            }
            guard !stillAllowed, let current = flows[key], current.authorize.requestId == flow.authorize.requestId else { continue }
            flows[key] = nil
            sendTo(gateway: flow.gateway, .revoke(Revoke(clientId: key.client, resourceId: key.resource)))
        }
    }

    /// The admin API changed resources, policies, memberships, groups, actors or sites: each
    /// connected client is told what it may now see (`resource_updated`) and no longer see
    /// (`resource_removed`), and authorizations no policy grants any more are revoked at their
    /// gateways. Runs one at a time, in the order of the changes.
    public func adminChanged() async {
        let previous = resyncTask
        let task = Task { await previous?.value; await self.resync() }
        resyncTask = task
        await task.value
    }

    private func resync() async {
        let resources: [Resource]
        let policies: [Policy]
        var groups: [ActorID: Set<GroupID>] = [:]
        var actors = Set(flows.values.map(\.actor))
        for p in peers.values { if case .client(let c, _, _) = p.kind { actors.insert(c.actorId) } }
        do {
            resources = try await store.resources()
            policies = try await store.policies()
            for a in actors { groups[a] = try await store.groupIDs(ofActor: a) }
        } catch {
            logger.error("resync after an admin change failed", metadata: ["error": "\(error)"])
            return
        }
        // No await from here on: the comparison and the pushes see one state.
        for pid in peers.keys.sorted() {
            guard let peer = peers[pid], case .client(let c, _, _) = peer.kind, let g = groups[c.actorId] else { continue }
            let granted = Set(policies.filter { g.contains($0.groupId) }.map(\.resourceId))
            var now: [ResourceID: ResourceView] = [:]
            for r in resources where granted.contains(r.id) { now[r.id] = ResourceView(r) }
            for (rid, view) in now.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where peer.visible[rid] != view {
                send(pid, ToClient.resourceUpdated(ResourceUpdated(resource: view)))
            }
            for rid in peer.visible.keys.sorted(by: { $0.rawValue < $1.rawValue }) where now[rid] == nil {
                send(pid, ToClient.resourceRemoved(ResourceRemoved(resourceId: rid)))
            }
            peers[pid]?.visible = now
        }
        let existing = Set(resources.map(\.id))
        let at = clock.now()
        for (key, flow) in flows {
            guard let g = groups[flow.actor] else { continue }
            var allowed = false
            if existing.contains(key.resource) {
                let d = PolicyEvaluator.evaluate(
                    resource: key.resource, actorGroups: g, source: flow.source, now: at, policies: policies.filter { $0.resourceId == key.resource })
                if case .allowed = d { allowed = true }
            }
            guard !allowed else { continue }
            flows[key] = nil
            sendTo(gateway: flow.gateway, .revoke(Revoke(clientId: key.client, resourceId: key.resource)))
        }
    }

    /// The admin API revoked this token: every connection authenticated with it gets
    /// `error {code: "token_revoked"}` and is closed (1008); authorizations granted to requests
    /// made with it are revoked at their gateways.
    public func tokenRevoked(_ token: TokenID) {
        for (key, flow) in flows where flow.token == token {
            flows[key] = nil
            sendTo(gateway: flow.gateway, .revoke(Revoke(clientId: key.client, resourceId: key.resource)))
        }
        for (rid, flow) in pending where flow.token == token { pending[rid] = nil }
        for pid in peers.keys.sorted() where peers[pid]?.token == token {
            guard let peer = peers[pid] else { continue }
            let revoked = ErrorMessage(code: ErrorMessage.tokenRevoked, message: "the token of this connection was revoked")
            peer.outbox.yield(.text(ControlCodec.encode(ToClient.error(revoked))))  // the same JSON for every kind of peer
            peer.outbox.yield(.close(reason: ErrorMessage.tokenRevoked))
            disconnect(pid)  // ends the outbox after the two entries above
        }
    }

    /// The connection's token reached its expiry: `error {code: "token_expired"}`, a 1008 close,
    /// offline. Its authorizations end with it (they were capped at the token's expiry).
    private func tokenExpired(_ pid: PeerID) {
        guard let peer = peers[pid] else { return }
        let expired = ErrorMessage(code: ErrorMessage.tokenExpired, message: "the token of this connection expired")
        peer.outbox.yield(.text(ControlCodec.encode(ToClient.error(expired))))
        peer.outbox.yield(.close(reason: ErrorMessage.tokenExpired))
        if let token = peer.token {
            for (key, flow) in flows where flow.token == token {
                flows[key] = nil
                sendTo(gateway: flow.gateway, .revoke(Revoke(clientId: key.client, resourceId: key.resource)))
            }
            for (rid, flow) in pending where flow.token == token { pending[rid] = nil }
        }
        disconnect(pid)
    }

    // MARK: Helpers

    private func deny(_ client: ClientID, _ resource: ResourceID, _ reason: DenialReason, since start: ContinuousClock.Instant?) {
        metrics.intent(reason, since: start)
        guard let p = clientPeers[client] else { return }
        send(p, ToClient.accessDenied(AccessDenied(resourceId: resource, reason: reason)))
    }

    private func send<M: ControlMessage>(_ peer: PeerID, _ message: M) {
        guard let p = peers[peer] else { return }
        if message.type == "presence" { metrics.presencePushes.increment() }
        p.outbox.yield(.text(ControlCodec.encode(message)))
    }

    private func countPeers() {
        var n: [PeerRole: Int] = [.gateway: 0, .client: 0, .relay: 0]
        for p in peers.values {
            switch p.kind {
            case .gateway: n[.gateway, default: 0] += 1
            case .client: n[.client, default: 0] += 1
            case .relay: n[.relay, default: 0] += 1
            }
        }
        for (role, count) in n { metrics.peers[role]?.set(to: Double(count)) }
    }

    private func sendTo(gateway: GatewayID, _ message: ToGateway) {
        if let p = gatewayPeers[gateway] { send(p, message) }
    }

    private func secret() async throws -> String {
        if let s = turnSecret { return s }
        let s = try await store.setting("turn_secret", default: Hex.encode(SecureRandom.bytes(32)))
        turnSecret = s
        return s
    }

    /// The online relays with credentials for `recipient` (a client or gateway id).
    private func relays(for recipient: String, secret: String, end: UnixTime?) -> [RelayView] {
        relayPeers.values.compactMap { pid -> RelayView? in
            guard case .relay(let r) = peers[pid]?.kind else { return nil }
            return mint(r, for: recipient, secret: secret, end: end)
        }.sorted { $0.id < $1.id }
    }

    private func relayView(_ r: Relay, for kind: Kind, secret: String) -> RelayView? {
        switch kind {
        case .client(let c, _, let end): mint(r, for: c.id.rawValue, secret: secret, end: end)
        case .gateway(let g): mint(r, for: g.id.rawValue, secret: secret, end: nil)
        case .relay: nil
        }
    }

    private func mint(_ r: Relay, for recipient: String, secret: String, end: UnixTime?) -> RelayView {
        let cred = RelayCredentials.mint(
            secret: secret, clientID: recipient, now: clock.now(), lifetime: config.relayCredentialLifetime, sessionExpiresAt: end)
        return RelayView(
            id: r.id, name: r.name, region: r.region, addresses: r.addresses, username: cred.username, password: cred.password,
            expiresAt: cred.expiresAt)
    }

    /// Resources some policy of the actor's groups grants (conditions are checked per request).
    private func visibleResources(actor: ActorID) async throws -> [ResourceView] {
        let groups = try await store.groupIDs(ofActor: actor)
        let granted = Set(try await store.policies().filter { groups.contains($0.groupId) }.map(\.resourceId))
        return try await store.resources().filter { granted.contains($0.id) }.map(ResourceView.init)
    }

    /// Whether `token` may register the new public key `key` now (one it did not register before,
    /// in storage): while it registered fewer than the limit in the last hour. Counts it when so.
    private func admitsKey(_ key: String, token: TokenID) -> Bool {
        let hourAgo = ContinuousClock.now - .seconds(3600)
        var keys = tokenKeys[token, default: [:]].filter { $0.value > hourAgo }
        defer { tokenKeys[token] = keys }
        if keys[key] != nil { return true }
        guard keys.count < config.maxNewKeysPerTokenPerHour else { return false }
        keys[key] = ContinuousClock.now
        return true
    }

    /// Whether the identity's public key is registered already (a reconnect, not a new row).
    private func isKnown(_ identity: PeerIdentity) async throws -> Bool {
        switch identity {
        case .gateway(let site, _, let k): try await store.isRegistered(publicKey: k, gatewayOf: site)
        case .client(_, _, let k, _): try await store.isRegistered(publicKey: k, gatewayOf: nil)
        case .relay: true
        }
    }

    /// Whether a new connection of `identity` with `token` would be refused now, and why
    /// (asked before the upgrade; `connect` decides again).
    func refusal(_ identity: PeerIdentity, token: TokenID) async -> BrokerError? {
        guard let key = Self.key(identity) else { return nil }
        if connectingKeys.contains(key) { return .alreadyConnected }
        if let old = keyPeers[key], peers[old]?.token != token { return .alreadyConnected }
        let known = (try? await isKnown(identity)) ?? false
        if !known {
            let hourAgo = ContinuousClock.now - .seconds(3600)
            let recent = tokenKeys[token, default: [:]].filter { $0.value > hourAgo }
            if recent[key] == nil, recent.count >= config.maxNewKeysPerTokenPerHour { return .registrationLimit(config.maxNewKeysPerTokenPerHour) }
        }
        return nil
    }

    /// Whether a peer with this identity's public key is connected now.
    func isConnected(_ identity: PeerIdentity) -> Bool {
        guard let key = Self.key(identity) else { return false }
        return keyPeers[key] != nil || connectingKeys.contains(key)
    }

    private static func key(_ identity: PeerIdentity) -> String? {
        switch identity {
        case .gateway(_, _, let k): "gateway:\(k.base64)"
        case .client(_, _, let k, _): "client:\(k.base64)"
        case .relay: nil
        }
    }

    private static func key(_ kind: Kind) -> String? {
        switch kind {
        case .gateway(let g): "gateway:\(g.publicKey.base64)"
        case .client(let c, _, _): "client:\(c.publicKey.base64)"
        case .relay: nil
        }
    }

    private func describe(_ k: Kind) -> String {
        switch k {
        case .gateway(let g): "gateway \(g.id)"
        case .client(let c, _, _): "client \(c.id)"
        case .relay(let r): "relay \(r.id)"
        }
    }
}
