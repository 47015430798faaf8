import FZCore
import STUN

/// A TURN server (RFC 8656 over UDP, RFC 8489 long-term credentials) as a sans-IO state machine.
///
/// Inputs: datagrams from clients (`handleClient`), datagrams from peers (`handlePeer`) and the
/// passing of time (`handleTimeout`); every call takes `now`. Outputs: the returned action, the
/// relayed-socket requests made through `sockets`, `events` and `nextDeadline`. It never reads
/// a clock or touches a socket itself, so every scenario runs in tests on a manual clock.
///
/// No state is created for a source before it authenticates: nonces are stateless, and the only
/// per-source memory is the bounded rate limiter for unauthenticated replies.
public struct TURNServer<Sockets: RelaySocketProvider> {
    public internal(set) var config: ServerConfig
    public private(set) var credentials: CredentialStore
    public private(set) var peerPolicy: PeerPolicy
    public var sockets: Sockets
    /// Unix seconds at monotonic time zero; REST usernames carry unix expiries. The shell
    /// refreshes it from the wall clock, tests set it.
    public var unixSecondsAtZero: Int64 = 0
    public internal(set) var stats = ServerStats()

    var nonces: NonceIssuer
    var limiter: RateLimiter
    var allocations: [FiveTuple: Allocation] = [:]
    var byRelayed: [SocketAddress: FiveTuple] = [:]
    var perUser: [String: Int] = [:]
    var pools: [IPAddress: PortPool] = [:]
    var reservations: [UInt64: Reservation] = [:]
    /// Expired channel bindings in their cooldown (RFC 8656 §12), per allocation.
    var cooling: [FiveTuple: [UInt16: Channel]] = [:]
    var events: [ServerEvent] = []
    var lastSweep: Timestamp = .zero
    var rng = SystemRandomNumberGenerator()

    /// The password algorithms offered in PASSWORD-ALGORITHMS, in order of preference.
    public static var offeredAlgorithms: [PasswordAlgorithm] { [.sha256, .md5] }

    public init(config: ServerConfig, credentials: CredentialStore, peerPolicy: PeerPolicy = PeerPolicy(),
                sockets: Sockets, nonceSecret: [UInt8]? = nil) {
        self.config = config
        self.credentials = credentials
        self.peerPolicy = peerPolicy
        self.sockets = sockets
        nonces = NonceIssuer(secret: nonceSecret, lifetime: config.nonceLifetime)
        limiter = RateLimiter(perSecond: config.unauthenticatedPerSecond, burst: config.unauthenticatedBurst)
        for r in config.relayAddresses where pools[r.bind] == nil {
            pools[r.bind] = PortPool(range: config.portRange)
        }
    }

    // MARK: Introspection

    public var allocationCount: Int { allocations.count }
    /// Whether this server holds an allocation for the 5-tuple (a multi-threaded shell routes
    /// datagrams of 5-tuples it does not hold to the server that does).
    public func hasAllocation(_ t: FiveTuple) -> Bool { allocations[t] != nil }
    public var reservationCount: Int { reservations.count }
    public func allocationCount(forUser u: String) -> Int { perUser[u] ?? 0 }
    public func relayedAddresses(of t: FiveTuple) -> [SocketAddress]? { allocations[t]?.relayed }
    public func expiry(of t: FiveTuple) -> Timestamp? { allocations[t]?.expiresAt }
    public func permissionCount(of t: FiveTuple) -> Int? { allocations[t]?.permissions.count }
    public func channelCount(of t: FiveTuple) -> Int? { allocations[t]?.channels.count }

    public mutating func drainEvents() -> [ServerEvent] {
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    var unixNow: (Timestamp) -> UInt64 {
        { [offset = unixSecondsAtZero] now in UInt64(clamping: offset + Int64(now.seconds)) }
    }

    // MARK: Reload (SIGHUP)

    /// Replaces users and secrets; allocations stay, and their next request is checked against
    /// the new credentials.
    public mutating func updateCredentials(_ c: CredentialStore) { credentials = c }

    /// Replaces the peer rules; permissions and channels the new rules forbid are removed at once.
    public mutating func updatePeerPolicy(_ p: PeerPolicy) {
        peerPolicy = p
        for (t, var a) in allocations {
            a.permissions = a.permissions.filter { p.permits($0.key) }
            for (n, ch) in a.channels where !p.permits(ch.peer) {
                a.channels[n] = nil
                a.channelByPeer[ch.peer] = nil
            }
            allocations[t] = a
        }
    }

    public mutating func updateLimits(userQuota: Int, totalQuota: Int) {
        config.userQuota = userQuota
        config.totalQuota = totalQuota
    }

    // MARK: Time

    /// When `handleTimeout` should next run: expiries are swept once a second while there is
    /// anything that can expire. The getter is `mutating` although it changes nothing: a shell
    /// asks once per event-loop iteration, and a plain getter on a server stored in a class
    /// copies the whole server (a retain and release of each of its collections) to call it.
    public var nextDeadline: Timestamp {
        mutating get {
            if allocations.isEmpty && reservations.isEmpty { return .distantFuture }
            return lastSweep + .seconds(1)
        }
    }

    public mutating func handleTimeout(now: Timestamp) {
        lastSweep = now
        for (t, a) in allocations where a.expiresAt <= now {
            deleteAllocation(t, reason: .expired)
        }
        for (t, var a) in allocations {
            var changed = false
            for (ip, exp) in a.permissions where exp <= now {
                a.permissions[ip] = nil
                changed = true
            }
            for (n, ch) in a.channels where ch.expiresAt <= now {
                a.channels[n] = nil
                a.channelByPeer[ch.peer] = nil
                cooling[t, default: [:]][n] = Channel(peer: ch.peer, expiresAt: ch.expiresAt + config.channelCooldown)
                changed = true
            }
            if changed { allocations[t] = a }
        }
        for (t, var c) in cooling {
            c = c.filter { $0.value.expiresAt > now }
            cooling[t] = c.isEmpty ? nil : c
        }
        for (token, r) in reservations where r.expiresAt <= now {
            reservations[token] = nil
            sockets.closeRelay(at: r.address)
            releasePort(r.address)
        }
    }

    // MARK: Client datagrams

    /// Handles one datagram a client sent to a listening socket.
    public mutating func handleClient(_ bytes: UnsafeRawBufferPointer, from client: SocketAddress,
                                      listener: SocketAddress, now: Timestamp) -> ClientAction {
        handleClient(bytes, tuple: FiveTuple(client: client, listener: listener), now: now, sendFastPath: true)
    }

    /// Handles one message a client sent on a stream (TCP): `bytes` is one STUN message or one
    /// ChannelData message without its padding, as `StreamFraming` cuts them; `tuple` names the
    /// connection. Answers are the same as over UDP; the shell writes them to the connection.
    public mutating func handleStreamMessage(_ bytes: UnsafeRawBufferPointer, tuple: FiveTuple, now: Timestamp) -> ClientAction {
        handleClient(bytes, tuple: tuple, now: now, sendFastPath: true)
    }

    /// The client's connection closed: its allocation, if any, ends with it (RFC 8656 §3.1).
    public mutating func connectionClosed(_ tuple: FiveTuple) {
        deleteAllocation(tuple, reason: .connectionClosed)
    }

    /// `sendFastPath: false` sends Send indications through the full decoder too: the reference
    /// the fast path is tested against.
    mutating func handleClient(_ bytes: UnsafeRawBufferPointer, from client: SocketAddress, listener: SocketAddress,
                               now: Timestamp, sendFastPath: Bool) -> ClientAction {
        handleClient(bytes, tuple: FiveTuple(client: client, listener: listener), now: now, sendFastPath: sendFastPath)
    }

    @inline(__always)
    mutating func handleClient(_ bytes: UnsafeRawBufferPointer, tuple: FiveTuple, now: Timestamp,
                               sendFastPath: Bool) -> ClientAction {
        let client = tuple.client
        switch PacketKind.classify(bytes) {
        case .channelData:
            return handleChannelData(bytes, tuple: tuple, now: now)
        case .stun:
            break
        case .other:
            stats.malformedDropped += 1
            return .none
        }
        // Send indications are data: read in place, without decoding into arrays. Those with
        // attributes the scan leaves to the decoder continue below, with the same outcome.
        if sendFastPath {
            switch SendIndication.scan(bytes) {
            case .indication(let s):
                return handleSend(peer: s.peer, data: s.data, dontFragment: s.dontFragment,
                                  unknownComprehensionRequired: s.hasUnknownComprehensionRequired, tuple: tuple, now: now)
            case .malformed:
                stats.malformedDropped += 1
                return .none
            case .needsDecoder:
                break
            }
        }
        let message: Message
        do {
            message = try Message.decode(bytes)
        } catch {
            // Garbage is dropped; a request whose header parsed gets 400 (RFC 8489 §6.3).
            guard let h = error.header, h.type.messageClass == .request else {
                stats.malformedDropped += 1
                return .none
            }
            stats.malformedDropped += 1
            guard limiter.allow(client.ip, now: now) else {
                stats.rateLimited += 1
                return .none
            }
            let stub = Message(type: h.type, transactionID: h.transactionID)
            return .reply(errorResponse(to: stub, .badRequest, auth: nil))
        }
        switch message.type.messageClass {
        case .request:
            return handleRequest(message, tuple: tuple, now: now)
        case .indication:
            if message.type.method == .send { return handleSend(message, bytes: bytes, tuple: tuple, now: now) }
            stats.unexpectedDropped += 1  // Binding indications (keepalives) and unknown indications
            return .none
        case .successResponse, .errorResponse:
            stats.unexpectedDropped += 1
            return .none
        }
    }

    mutating func handleRequest(_ m: Message, tuple: FiveTuple, now: Timestamp) -> ClientAction {
        let method = m.type.method
        if method == .binding {
            stats.bindingRequests += 1
            return .reply(success(to: m, [.xorMappedAddress(tuple.client)], auth: nil))
        }
        guard [.allocate, .refresh, .createPermission, .channelBind].contains(method) else {
            return unauthenticatedError(m, .badRequest, client: tuple.client, now: now)
        }
        let auth: AuthContext
        switch authenticate(m, client: tuple.client, now: now) {
        case .authenticated(let a): auth = a
        case .rejected(let action): return action
        }
        let unknown = m.unknownComprehensionRequired
        if !unknown.isEmpty {
            return .reply(errorResponse(to: m, .unknownAttribute, extra: [.unknownAttributes(unknown)], auth: auth, tuple: tuple))
        }
        if method == .allocate { return handleAllocate(m, tuple: tuple, auth: auth, now: now) }

        guard var a = liveAllocation(tuple, now: now) else {
            return .reply(errorResponse(to: m, .allocationMismatch, auth: auth, tuple: tuple))
        }
        // RFC 8656 §5: requests on an allocation must use the username that created it.
        guard a.username == auth.username else {
            return .reply(errorResponse(to: m, .wrongCredentials, auth: auth, tuple: tuple))
        }
        switch method {
        case .refresh:
            return handleRefresh(m, tuple: tuple, allocation: &a, auth: auth, now: now)
        case .createPermission:
            return handleCreatePermission(m, tuple: tuple, allocation: &a, auth: auth, now: now)
        default:
            return handleChannelBind(m, tuple: tuple, allocation: &a, auth: auth, now: now)
        }
    }

    // MARK: Authentication (RFC 8489 §9.2.4)

    enum AuthOutcome {
        case authenticated(AuthContext)
        case rejected(ClientAction)
    }

    mutating func authenticate(_ m: Message, client: SocketAddress, now: Timestamp) -> AuthOutcome {
        let hasIntegrity = m.attributes.contains {
            if case .messageIntegrity = $0 { return true }
            if case .messageIntegritySHA256 = $0 { return true }
            return false
        }
        guard hasIntegrity else {
            stats.challenges += 1
            return .rejected(challenge(m, .unauthenticated, client: client, now: now))
        }
        guard let realm = m.realm, let nonce = m.nonce, m.username != nil || m.userhash != nil else {
            return .rejected(unauthenticatedError(m, .badRequest, client: client, now: now))
        }
        switch nonces.check(nonce, for: client, now: now) {
        case .valid: break
        case .stale, .invalid:
            stats.staleNonces += 1
            return .rejected(challenge(m, .staleNonce, client: client, now: now))
        }
        // Password algorithm negotiation (§9.2.4 step 4): either both attributes, matching what
        // we offered, or neither (an RFC 5389 client: MD5).
        var algorithm = PasswordAlgorithm.md5
        switch (m.passwordAlgorithms, m.passwordAlgorithm) {
        case (nil, nil):
            break
        case (let offered?, let chosen?) where offered == Self.offeredAlgorithms && offered.contains(chosen):
            algorithm = chosen
        default:
            return .rejected(unauthenticatedError(m, .badRequest, client: client, now: now))
        }
        let username: String
        if let u = m.username {
            username = u
        } else if let h = m.userhash, let u = credentials.username(forUserhash: h) {
            username = u
        } else {
            stats.authFailures += 1
            return .rejected(challenge(m, .unauthenticated, client: client, now: now))
        }
        guard realm == config.realm else {
            stats.authFailures += 1
            return .rejected(challenge(m, .unauthenticated, client: client, now: now))
        }
        for password in credentials.passwords(for: username, unixNow: unixNow(now)) {
            let key = LongTermCredentials.key(username: username, realm: realm, password: password, algorithm: algorithm)
            if case .valid(let alg) = m.checkIntegrity(key: key) {
                return .authenticated(AuthContext(username: username, key: key, integrity: alg))
            }
        }
        stats.authFailures += 1
        return .rejected(challenge(m, .unauthenticated, client: client, now: now))
    }

    /// A 401 or 438 carrying REALM, a fresh NONCE and PASSWORD-ALGORITHMS, rate-limited per source.
    mutating func challenge(_ m: Message, _ code: ErrorCode, client: SocketAddress, now: Timestamp) -> ClientAction {
        guard limiter.allow(client.ip, now: now) else {
            stats.rateLimited += 1
            return .none
        }
        let attrs: [Attribute] = [
            .realm(config.realm), .nonce(nonces.issue(for: client, now: now)),
            .passwordAlgorithms(Self.offeredAlgorithms),
        ]
        return .reply(errorResponse(to: m, code, extra: attrs, auth: nil))
    }

    /// An error reply sent before authentication, rate-limited per source.
    mutating func unauthenticatedError(_ m: Message, _ code: ErrorCode, client: SocketAddress, now: Timestamp)
        -> ClientAction
    {
        guard limiter.allow(client.ip, now: now) else {
            stats.rateLimited += 1
            return .none
        }
        return .reply(errorResponse(to: m, code, auth: nil))
    }

    // MARK: Responses

    func success(to m: Message, _ attrs: [Attribute], auth: AuthContext?) -> [UInt8] {
        var all = attrs
        if let s = config.software, m.type.method == .allocate { all.append(.software(s)) }
        let r = Message(type: MessageType(method: m.type.method, messageClass: .successResponse),
                        transactionID: m.transactionID, attributes: all)
        return r.encode(integrity: auth.map { MessageIntegrity(key: $0.key, algorithm: $0.integrity) },
                        fingerprint: m.hasFingerprint)
    }

    mutating func errorResponse(to m: Message, _ code: ErrorCode, extra: [Attribute] = [], auth: AuthContext?,
                                tuple: FiveTuple? = nil) -> [UInt8] {
        stats.errorResponses += 1
        if let auth, let tuple {
            events.append(.requestRefused(tuple, username: auth.username, method: m.type.method.rawValue, code: code.code))
        }
        let r = Message(type: MessageType(method: m.type.method, messageClass: .errorResponse),
                        transactionID: m.transactionID, attributes: [.errorCode(code)] + extra)
        return r.encode(integrity: auth.map { MessageIntegrity(key: $0.key, algorithm: $0.integrity) },
                        fingerprint: m.hasFingerprint)
    }

    // MARK: Allocation bookkeeping

    /// The allocation of a 5-tuple if it has not expired (expiry is also swept by the timer;
    /// this makes it exact to the nanosecond).
    mutating func liveAllocation(_ t: FiveTuple, now: Timestamp) -> Allocation? {
        guard let a = allocations[t] else { return nil }
        if a.expiresAt <= now {
            deleteAllocation(t, reason: .expired)
            return nil
        }
        return a
    }

    mutating func deleteAllocation(_ t: FiveTuple, reason: ServerEvent.DeletionReason) {
        guard let a = allocations.removeValue(forKey: t) else { return }
        for r in a.relayed {
            byRelayed[r] = nil
            sockets.closeRelay(at: r)
            releasePort(r)
        }
        cooling[t] = nil
        sockets.allocationEnded(t, user: a.username)
        let n = (perUser[a.username] ?? 1) - 1
        perUser[a.username] = n > 0 ? n : nil
        if reason == .expired { stats.allocationsExpired += 1 } else { stats.allocationsDeleted += 1 }
        events.append(.allocationDeleted(t, reason: reason))
    }

    mutating func releasePort(_ address: SocketAddress) {
        pools[address.ip]?.release(address.port)
    }

    /// RFC 8656 §7.2 / §8: the minimum of the requested and maximum lifetimes, but never less
    /// than the default.
    func grantedLifetime(_ requested: UInt32?) -> Duration {
        guard let r = requested else { return config.defaultLifetime }
        let asked = Duration.seconds(Int64(r))
        return max(config.defaultLifetime, min(asked, config.maxLifetime))
    }
}

extension Message {
    var hasFingerprint: Bool {
        attributes.contains { if case .fingerprint = $0 { return true } else { return false } }
    }
}
