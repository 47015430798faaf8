import FZCore
import STUN

/// The connectivity engine: one instance serves every peer connection of a client or a gateway
/// over one UDP socket per address family, like Firezone's `snownet` node. Sans-IO, as its parts
/// are: datagrams and `now` in; transmits, events and the next deadline out.
///
/// It owns
/// - the **relays** the portal listed: each is measured with STUN Binding (RTT, and our mapped
///   address there: a server-reflexive candidate); allocations are made on the best `allocations`
///   (two: the best and a standby on another relay), in the order the probes are answered, so the
///   fastest relay is allocated first; a relay that stops answering or loses our allocation is
///   replaced by the next best;
/// - one **`IceAgent` per peer**, all sharing the local candidates: host (one per announced
///   address, on its family's socket), server-reflexive (probes and Allocate responses), relayed
///   (one per allocation, ranked by RTT);
/// - the **demultiplexing** of what arrives on the sockets (RFC 7983): STUN from a relay's
///   address is a probe answer or the TURN client's; ChannelData and Data indications from it are
///   unwrapped in place and are either ICE checks (to the agent) or a peer's data (`relayedData`);
///   STUN from anyone else is an ICE check, routed by the USERNAME's ufrag (requests) or the
///   transaction (responses) to its agent; anything else is not the node's (`notMine`: WireGuard).
///
/// For each peer it emits the `NodePath` data goes over (`.path` events), which the data plane
/// applies: direct to an address, or through our allocation as ChannelData on a bound channel.
/// The data path itself never passes through the node.
///
/// Cost: inputs and timers touch only the connection or relay they concern; `nextDeadline` is
/// kept up to date after each input (O(peers) then, O(1) to read), since the data plane's loop
/// asks for it on every iteration.
public struct ConnectivityNode<Peer: Hashable & Sendable>: Sendable {
    public private(set) var config: NodeConfig
    public internal(set) var stats = NodeStats()
    /// When `handleTimeout` must next be called.
    public private(set) var nextDeadline: Timestamp = .distantFuture

    struct Connection: Sendable {
        var agent: IceAgent
        var pair: IcePair?
        var path: NodePath?
        /// A relayed pair was selected before its channel was bound: the path follows the binding.
        var pendingPair: IcePair?
        var deadline: Timestamp = .distantFuture
    }

    struct Relay: Sendable {
        var info: NodeRelay
        var samples: [Duration] = []
        var probe: (id: TransactionID, sentAt: Timestamp)?
        var nextProbeAt: Timestamp
        var lostProbes = 0
        var client: TURNClient?
        var cooldownUntil: Timestamp = .zero
        var held: [(destination: SocketAddress, bytes: [UInt8])] = []
        /// Order in which allocations were made (0: the first, best): the relayed candidate's local preference.
        var rank = 0

        var rtt: Duration? {
            guard !samples.isEmpty else { return nil }
            return samples.sorted()[samples.count / 2]
        }

        var reachable: Bool { !samples.isEmpty && lostProbes < 2 }

        var relayedAddress: SocketAddress? {
            guard let c = client, case .allocated = c.state else { return nil }
            return c.relayedAddress
        }

        var holdsAllocation: Bool {
            guard let c = client else { return false }
            switch c.state {
            case .allocating, .allocated: return true
            default: return false
            }
        }
    }

    var connections: [Peer: Connection] = [:]
    var byUfrag: [String: Peer] = [:]
    var relays: [Relay] = []
    var locals: [(candidate: Candidate, via: IceVia)] = []
    var allocationCounter = 0
    var transmits = OutputQueue<NodeTransmit>()
    var events = OutputQueue<NodeEvent<Peer>>()

    public init(config: NodeConfig) {
        self.config = config
        for ip in config.hostAddresses where !config.relayOnly {
            guard let socket = socket(for: ip.family) else { continue }
            let address = SocketAddress(ip: ip, port: socket.port)
            locals.append((Candidate.host(address), .socket(socket)))
        }
    }

    // MARK: Outputs

    public mutating func pollTransmit() -> NodeTransmit? { transmits.next() }

    public mutating func pollEvent() -> NodeEvent<Peer>? { events.next() }

    /// The path data to `peer` goes over now.
    public func path(of peer: Peer) -> NodePath? { connections[peer]?.path }

    /// The selected pair to `peer` (for status: which candidate, relayed or not).
    public func selectedPair(of peer: Peer) -> IcePair? { connections[peer]?.pair }

    public func agent(of peer: Peer) -> IceAgent? { connections[peer]?.agent }

    public var peers: [Peer] { Array(connections.keys) }

    public var localCandidates: [Candidate] { locals.map(\.candidate) }

    public var relayStatus: [NodeRelayStatus] {
        relays.map {
            NodeRelayStatus(id: $0.info.id, name: $0.info.name, address: $0.info.address, rtt: $0.rtt,
                            reachable: $0.reachable, relayed: $0.relayedAddress)
        }
    }

    /// The relay (by its server address) that a relayed path goes through.
    public func relay(at server: SocketAddress) -> NodeRelay? { relays.first { $0.info.address == server }?.info }

    /// The relay whose allocation has the relayed address `relayed`; else, for the peer's relayed
    /// candidate, the known relay at that IP (relays allocate on their own address).
    public func relay(relayed: SocketAddress) -> NodeRelay? {
        relays.first { $0.relayedAddress == relayed }?.info ?? relays.first { $0.info.address.ip == relayed.ip }?.info
    }

    // MARK: Relays

    /// The relays to use (the portal's list, refreshed credentials included). New relays are
    /// probed at once; relays no longer listed are deallocated and forgotten.
    public mutating func setRelays(_ list: [NodeRelay], now: Timestamp) {
        let wanted = Dictionary(list.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for i in relays.indices.reversed() {
            guard let info = wanted[relays[i].info.id], info.address == relays[i].info.address else {
                dropRelay(i, now: now)
                continue
            }
            relays[i].info = info
        }
        for info in list where !relays.contains(where: { $0.info.id == info.id }) {
            guard socket(for: info.address.family) != nil else { continue }
            relays.append(Relay(info: info, nextProbeAt: now))
        }
        service(now: now)
    }

    mutating func dropRelay(_ i: Int, now: Timestamp) {
        if var c = relays[i].client {
            c.deallocate(now: now)
            while let t = c.pollTransmit() { emit(t.bytes, to: t.destination) }
        }
        forgetCandidates(relayed: relays[i].relayedAddress)
        relays.remove(at: i)
    }

    func socket(for family: AddressFamily) -> SocketAddress? { config.sockets.first { $0.family == family } }

    mutating func emit(_ bytes: [UInt8], to destination: SocketAddress) {
        guard let s = socket(for: destination.family) else { return }
        transmits.append(NodeTransmit(socket: s, destination: destination, bytes: bytes))
    }

    mutating func sendProbe(_ i: Int, now: Timestamp) {
        let id = TransactionID.random()
        var attributes: [Attribute] = []
        if let s = config.software { attributes.append(.software(s)) }
        let bytes = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: id,
                            attributes: attributes).encode(fingerprint: true)
        relays[i].probe = (id, now)
        stats.probesSent += 1
        emit(bytes, to: relays[i].info.address)
    }

    mutating func handleProbeResponse(_ i: Int, _ m: Message, now: Timestamp) {
        guard let probe = relays[i].probe else { return }
        relays[i].probe = nil
        // An error response (a relay that wants authentication for Binding) still measures the path.
        stats.probesAnswered += 1
        relays[i].samples.append(now - probe.sentAt)
        if relays[i].samples.count > config.rttSamples { relays[i].samples.removeFirst() }
        relays[i].lostProbes = 0
        // Three quick samples first, then one per interval.
        relays[i].nextProbeAt = relays[i].samples.count < 3 ? now : now + config.probeInterval
        if let mapped = m.xorMappedAddress, let base = socket(for: mapped.family) {
            addLocal(Candidate.serverReflexive(mapped, base: hostBase(base), server: relays[i].info.address), via: .socket(base), now: now)
        }
    }

    /// The address a server-reflexive candidate names as its base: the first host address of the
    /// family (the socket may be bound to the wildcard).
    func hostBase(_ socket: SocketAddress) -> SocketAddress {
        locals.first { $0.candidate.kind == .host && $0.via == .socket(socket) }?.candidate.address ?? socket
    }

    /// Keeps `allocations` allocations on the best reachable relays.
    mutating func maintainAllocations(now: Timestamp) {
        while relays.filter(\.holdsAllocation).count < config.allocations {
            var best: Int?
            for i in relays.indices where !relays[i].holdsAllocation && relays[i].reachable && now >= relays[i].cooldownUntil {
                if best == nil || relays[i].rtt! < relays[best!].rtt! { best = i }
            }
            guard let i = best else { return }
            var c = TURNClientConfig(server: relays[i].info.address, credentials: relays[i].info.credentials)
            c.retransmission = config.turnRetransmission
            c.software = config.software
            var client = TURNClient(config: c)
            client.allocate(now: now)
            relays[i].client = client
            relays[i].rank = allocationCounter
            allocationCounter += 1
            drainRelay(i, now: now)
        }
    }

    /// `cooldown`: the relay is presumed unhealthy and is not asked again for `relayCooldown`.
    mutating func relayFailed(_ i: Int, reason: String, cooldown: Bool = true, now: Timestamp) {
        stats.allocationsLost += 1
        forgetCandidates(relayed: relays[i].client?.relayedAddress)
        relays[i].client = nil
        relays[i].held.removeAll()
        if cooldown { relays[i].cooldownUntil = now + config.relayCooldown }
        events.append(.relayLost(id: relays[i].info.id, reason: reason))
        maintainAllocations(now: now)
    }

    /// The relay answered that it holds no allocation for our 5-tuple (437): it restarted, or our
    /// address changed (a NAT rebinding, another network). It is alive, so it gets a new allocation
    /// at once, and every relay is probed again now to learn our server-reflexive address: the
    /// agents get the new candidates and find a path again without waiting for their timeouts.
    mutating func addressMayHaveChanged(_ i: Int, now: Timestamp) {
        stats.addressChanges += 1
        for j in relays.indices where relays[j].probe == nil { relays[j].nextProbeAt = now }
        relayFailed(i, reason: TURNFailure.allocationMismatch.description, cooldown: false, now: now)
    }

    /// New connections do not get the relayed candidate of a lost allocation; existing agents
    /// find out by consent (their pairs through it stop answering).
    mutating func forgetCandidates(relayed: SocketAddress?) {
        guard let relayed else { return }
        locals.removeAll { $0.via == .relay(relayed) }
    }

    /// Drains one relay's TURN client: transmits out, events handled.
    mutating func drainRelay(_ i: Int, now: Timestamp) {
        guard var client = relays[i].client else { return }
        while let t = client.pollTransmit() { emit(t.bytes, to: t.destination) }
        var happened: [TURNClientEvent] = []
        while let e = client.pollEvent() { happened.append(e) }
        relays[i].client = client
        for e in happened {
            switch e {
            case .allocated(let relayed, let mapped, _):
                stats.allocationsMade += 1
                let pref = UInt16(65535 - min(relays[i].rank, 1000))
                let server = relays[i].info.address
                if let mapped, let base = socket(for: mapped.family) {
                    addLocal(Candidate.serverReflexive(mapped, base: hostBase(base), server: server), via: .socket(base), now: now)
                }
                addLocal(Candidate.relayed(relayed, mapped: mapped, server: server, localPreference: pref), via: .relay(relayed), now: now)
                // Permissions for every candidate the peers announced, so their checks get in.
                for c in connections.values {
                    for r in c.agent.remoteCandidates where r.address.family == relayed.family {
                        relays[i].client?.createPermission(for: r.address.ip, now: now)
                    }
                }
                events.append(.relayAllocated(id: relays[i].info.id, relayed: relayed))
                drainRelay(i, now: now)
            case .permissionCreated, .channelBound:
                flushHeld(i, now: now)
                completePendingPaths(now: now)
            case .allocationLost(.allocationMismatch):
                addressMayHaveChanged(i, now: now)
                return
            case .allocationFailed(let f), .allocationLost(let f):
                relayFailed(i, reason: f.description, now: now)
                return
            case .refreshed, .permissionFailed, .channelBindFailed, .deallocated:
                break
            }
        }
    }

    /// Sends what waited for a permission or channel on relay `i`.
    mutating func flushHeld(_ i: Int, now: Timestamp) {
        guard var client = relays[i].client, !relays[i].held.isEmpty else { return }
        var still: [(destination: SocketAddress, bytes: [UInt8])] = []
        for h in relays[i].held {
            if client.hasPermission(for: h.destination.ip, now: now) || client.channel(for: h.destination) != nil,
               let t = client.send(to: h.destination, payload: h.bytes, now: now) {
                emit(t.bytes, to: t.destination)
            } else {
                still.append(h)
            }
        }
        relays[i].client = client
        relays[i].held = still
    }

    // MARK: Candidates

    mutating func addLocal(_ c: Candidate, via: IceVia, now: Timestamp) {
        if config.relayOnly, !via.isRelay { return }
        guard !locals.contains(where: { $0.candidate.address == c.address && $0.via == via && $0.candidate.kind == c.kind }) else { return }
        locals.append((c, via))
        for peer in Array(connections.keys) {
            connections[peer]!.agent.addLocalCandidate(c, via: via, now: now)
            drain(peer, now: now)
        }
    }

    // MARK: Connections

    /// Starts (or restarts, when the credentials changed) the connection to `peer`: an agent in
    /// the node's role with every local candidate; checks begin as remote candidates arrive.
    public mutating func connect(_ peer: Peer, local: IceCredentials, remote: IceCredentials, now: Timestamp) {
        if let c = connections[peer], c.agent.localCredentials == local, c.agent.remoteCredentials == remote { return }
        remove(peer, now: now)
        var ice = config.ice
        ice.role = config.role
        ice.local = local
        if ice.software == nil { ice.software = config.software }
        var agent = IceAgent(config: ice)
        agent.setRemoteCredentials(remote, now: now)
        connections[peer] = Connection(agent: agent)
        byUfrag[local.ufrag] = peer
        for l in locals { connections[peer]!.agent.addLocalCandidate(l.candidate, via: l.via, now: now) }
        drain(peer, now: now)
        updateDeadline()
    }

    /// A candidate the peer signalled. Our allocations get a permission for its address.
    public mutating func addRemoteCandidate(_ c: Candidate, for peer: Peer, now: Timestamp) {
        guard connections[peer] != nil else { return }
        for i in relays.indices where relays[i].relayedAddress?.family == c.address.family {
            relays[i].client?.createPermission(for: c.address.ip, now: now)
            drainRelay(i, now: now)
        }
        connections[peer]?.agent.addRemoteCandidate(c, now: now)
        drain(peer, now: now)
        updateDeadline()
    }

    public mutating func setRemoteEndOfCandidates(for peer: Peer, now: Timestamp) {
        connections[peer]?.agent.setRemoteEndOfCandidates(now: now)
        drain(peer, now: now)
        updateDeadline()
    }

    /// Forgets the connection (revoked, expired, or replaced).
    public mutating func remove(_ peer: Peer, now: Timestamp) {
        guard let c = connections.removeValue(forKey: peer) else { return }
        if byUfrag[c.agent.localCredentials.ufrag] == peer { byUfrag[c.agent.localCredentials.ufrag] = nil }
        updateDeadline()
    }

    /// Data flowed to or from `peer` (call it every few hundred milliseconds while it does):
    /// liveness switches to its fast mode.
    public mutating func noteTraffic(_ peer: Peer, now: Timestamp) {
        guard connections[peer] != nil else { return }
        connections[peer]!.agent.noteTraffic(now: now)
        connections[peer]!.deadline = connections[peer]!.agent.nextDeadline
        nextDeadline = min(nextDeadline, connections[peer]!.deadline)
    }

    /// Frames `payload` for `peer` on its current path (tests and low-rate users; the data plane
    /// sends on the path itself, without copies).
    public mutating func sendData(to peer: Peer, _ payload: [UInt8], now: Timestamp) -> NodeTransmit? {
        guard let c = connections[peer], let pair = c.pair, let path = c.path else { return nil }
        switch path {
        case .direct(let d):
            guard let s = socket(for: d.family) else { return nil }
            return NodeTransmit(socket: s, destination: d, bytes: payload)
        case .relayed(let server, _):
            guard let i = relays.firstIndex(where: { $0.info.address == server }),
                  let t = relays[i].client?.send(to: pair.remote.address, payload: payload, now: now),
                  let s = socket(for: server.family)
            else { return nil }
            return NodeTransmit(socket: s, destination: t.destination, bytes: t.bytes)
        }
    }

    /// Drains one agent: transmits (through the TURN client for relayed vias), events.
    mutating func drain(_ peer: Peer, now: Timestamp) {
        guard var c = connections[peer] else { return }
        var sends: [IceTransmit] = []
        var happened: [IceEvent] = []
        while let t = c.agent.pollTransmit() { sends.append(t) }
        while let e = c.agent.pollEvent() { happened.append(e) }
        c.deadline = c.agent.nextDeadline
        connections[peer] = c
        for t in sends { transmit(t, now: now) }
        for e in happened { handle(e, of: peer, now: now) }
    }

    mutating func transmit(_ t: IceTransmit, now: Timestamp) {
        switch t.via {
        case .socket(let s):
            transmits.append(NodeTransmit(socket: s, destination: t.destination, bytes: t.bytes))
        case .relay(let relayed):
            guard let i = relays.firstIndex(where: { $0.relayedAddress == relayed }), var client = relays[i].client else {
                stats.relayTransmitsDropped += 1
                return
            }
            // A channel for every destination checked through the relay: the path needs one
            // (ChannelData, 4 bytes of overhead instead of 36), and binding installs the permission.
            client.bindChannel(to: t.destination, now: now)
            if let out = client.send(to: t.destination, payload: t.bytes, now: now) {
                relays[i].client = client
                emit(out.bytes, to: out.destination)
            } else {
                relays[i].client = client
                if relays[i].held.count < config.maxHeldRelayTransmits {
                    relays[i].held.append((t.destination, t.bytes))
                    stats.relayTransmitsHeld += 1
                } else {
                    stats.relayTransmitsDropped += 1
                }
            }
            drainRelay(i, now: now)
        }
    }

    mutating func handle(_ e: IceEvent, of peer: Peer, now: Timestamp) {
        switch e {
        case .newLocalCandidate(let c):
            events.append(.localCandidate(peer, c))
        case .selected(let pair):
            choosePath(pair, for: peer, now: now)
        case .pairFailed(let pair):
            // A relayed pair that died may mean a dead relay: measure it now rather than at the
            // next interval; and check that it still holds our allocation (it may have restarted,
            // or our address changed: a 437 then re-allocates at once).
            if case .relay(let relayed) = pair.via, let i = relays.firstIndex(where: { $0.relayedAddress == relayed }) {
                if relays[i].probe == nil { sendProbe(i, now: now) }
                relays[i].client?.checkAllocation(now: now)
                drainRelay(i, now: now)
            }
        case .disconnected:
            connections[peer]?.pair = nil
            connections[peer]?.pendingPair = nil
            events.append(.disconnected(peer))
        case .connectionFailed:
            events.append(.failed(peer))
        case .nominated, .roleChanged:
            break
        }
    }

    mutating func choosePath(_ pair: IcePair, for peer: Peer, now: Timestamp) {
        guard connections[peer] != nil else { return }
        let path: NodePath
        switch pair.via {
        case .socket:
            path = .direct(pair.remote.address)
        case .relay(let relayed):
            guard let i = relays.firstIndex(where: { $0.relayedAddress == relayed }), var client = relays[i].client else { return }
            guard let channel = client.channel(for: pair.remote.address) else {
                client.bindChannel(to: pair.remote.address, now: now)
                relays[i].client = client
                connections[peer]!.pendingPair = pair
                drainRelay(i, now: now)
                return
            }
            path = .relayed(relay: relays[i].info.address, channel: channel)
        }
        connections[peer]!.pendingPair = nil
        connections[peer]!.pair = pair
        guard connections[peer]!.path != path else { return }
        connections[peer]!.path = path
        events.append(.path(peer, path, pair))
    }

    mutating func completePendingPaths(now: Timestamp) {
        for (peer, c) in connections {
            guard let pair = c.pendingPair, c.agent.selectedPair == pair else { continue }
            choosePath(pair, for: peer, now: now)
        }
    }

    // MARK: Inputs

    /// One datagram that arrived on local socket `socket` from `source`.
    public mutating func handleInbound(_ bytes: UnsafeRawBufferPointer, from source: SocketAddress, socket: SocketAddress,
                                       now: Timestamp) -> NodeInput {
        defer { updateDeadline() }
        let kind = PacketKind.classify(bytes)
        if let i = relays.firstIndex(where: { $0.info.address == source }) {
            return fromRelay(i, bytes, kind: kind, now: now)
        }
        guard kind == .stun else { return .notMine }
        routeSTUN(bytes, from: source, via: .socket(socket), now: now)
        return .handled
    }

    public mutating func handleInbound(_ bytes: [UInt8], from source: SocketAddress, socket: SocketAddress,
                                       now: Timestamp) -> NodeInput {
        bytes.withUnsafeBytes { handleInbound($0, from: source, socket: socket, now: now) }
    }

    mutating func fromRelay(_ i: Int, _ bytes: UnsafeRawBufferPointer, kind: PacketKind, now: Timestamp) -> NodeInput {
        if kind == .stun, let probe = relays[i].probe, bytes.count >= 20,
           TransactionID(bytes: bytes[8..<20]) == probe.id {
            guard let m = try? Message.decode(bytes) else {
                stats.malformed += 1
                return .handled
            }
            handleProbeResponse(i, m, now: now)
            maintainAllocations(now: now)
            return .handled
        }
        guard var client = relays[i].client else {
            stats.unclaimedSTUN += 1
            return .handled
        }
        let input = client.handle(datagram: bytes, from: relays[i].info.address, now: now)
        relays[i].client = client
        drainRelay(i, now: now)
        guard case .data(let peer, let range) = input, let relayed = relays[i].relayedAddress ?? client.relayedAddress else {
            return .handled
        }
        let inner = UnsafeRawBufferPointer(rebasing: bytes[range])
        if PacketKind.classify(inner) == .stun {
            routeSTUN(inner, from: peer, via: .relay(relayed), now: now)
            return .handled
        }
        var channel: UInt16? = kind == .channelData ? UInt16(bytes[0]) << 8 | UInt16(bytes[1]) : nil
        if channel == nil, var client = relays[i].client {
            // A peer's data in a Data indication: it reached our relay before the channel to it
            // was bound. Bind it now; the ChannelBind leaves before any reply, so a reply (a
            // WireGuard handshake response) can already go as ChannelData on it, in order, rather
            // than as a bare datagram the relay would drop.
            channel = client.bindChannel(to: peer, now: now)
            relays[i].client = client
            drainRelay(i, now: now)
        }
        return .relayedData(payload: range, peer: peer, relay: relays[i].info.address, channel: channel)
    }

    /// An ICE check or its answer: to the agent whose ufrag the USERNAME names (requests), or
    /// whose transaction it answers (responses).
    mutating func routeSTUN(_ bytes: UnsafeRawBufferPointer, from source: SocketAddress, via: IceVia, now: Timestamp) {
        guard bytes.count >= 20 else {
            stats.malformed += 1
            return
        }
        let classBits = (UInt16(bytes[0]) << 8 | UInt16(bytes[1])) & 0x0110
        let peer: Peer?
        if classBits == 0x0010 { return }  // an indication: a keepalive that needs no answer (RFC 8445 §11)
        if classBits == 0x0000 {
            // A request: USERNAME is "their-ufrag-for-us:..." — our ufrag first.
            guard let m = try? Message.decode(bytes) else {
                stats.malformed += 1
                return
            }
            let ours = m.username.flatMap { $0.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first }
            peer = ours.flatMap { byUfrag[String($0)] }
        } else {
            let id = TransactionID(bytes: bytes[8..<20])
            peer = connections.first { $0.value.agent.isAwaiting(id) }?.key
        }
        guard let peer, connections[peer] != nil else {
            stats.unclaimedSTUN += 1
            return
        }
        if !connections[peer]!.agent.handleInbound(bytes, from: source, via: via, now: now) { stats.unclaimedSTUN += 1 }
        drain(peer, now: now)
    }

    // MARK: Timers

    public mutating func handleTimeout(now: Timestamp) {
        service(now: now)
        for peer in Array(connections.keys) where connections[peer]!.deadline <= now {
            connections[peer]!.agent.handleTimeout(now: now)
            drain(peer, now: now)
        }
        updateDeadline()
    }

    /// Relay probes, their timeouts, TURN timers and allocations.
    mutating func service(now: Timestamp) {
        for i in relays.indices {
            if relays[i].cooldownUntil != .zero, now >= relays[i].cooldownUntil { relays[i].cooldownUntil = .zero }
            if let p = relays[i].probe, now >= p.sentAt + config.probeTimeout {
                relays[i].probe = nil
                relays[i].lostProbes += 1
                stats.probesTimedOut += 1
                relays[i].nextProbeAt = now + (relays[i].lostProbes < 2 ? .zero : config.probeInterval)
                if relays[i].lostProbes == 2, relays[i].holdsAllocation {
                    relayFailed(i, reason: "stopped answering STUN", now: now)
                }
            }
            if relays[i].probe == nil, now >= relays[i].nextProbeAt {
                sendProbe(i, now: now)
                relays[i].nextProbeAt = now + config.probeInterval
            }
            if var c = relays[i].client, c.nextDeadline <= now {
                c.handleTimeout(now: now)
                relays[i].client = c
                drainRelay(i, now: now)
            }
        }
        maintainAllocations(now: now)
        updateDeadline()
    }

    mutating func updateDeadline() {
        var d = Timestamp.distantFuture
        for r in relays {
            if let p = r.probe { d = min(d, p.sentAt + config.probeTimeout) } else { d = min(d, r.nextProbeAt) }
            if let c = r.client { d = min(d, c.nextDeadline) }
            if r.cooldownUntil != .zero { d = min(d, r.cooldownUntil) }
        }
        for c in connections.values { d = min(d, c.deadline) }
        nextDeadline = d
    }
}
