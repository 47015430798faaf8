import FZCore
import STUN

/// The client side of TURN over UDP (RFC 8656) with long-term credentials (RFC 8489 §9.2), as a
/// sans-IO state machine: datagrams and `now` in, transmits (all to the server), events and the
/// next deadline out. It owns one allocation at a time and the permissions and channels on it.
///
/// Inputs: `handle(datagram:from:now:)`, `handleTimeout(now:)` and the calls that ask for
/// something (`allocate`, `createPermission`, `bindChannel`, `deallocate`). Outputs:
/// `pollTransmit()`, `pollEvent()`, `nextDeadline`, `stats`. The data path (`send`,
/// `frameChannelData`, inbound unwrapping) returns its results directly and queues nothing.
///
/// Decisions where the RFCs leave room:
/// - Refreshes (allocation, permission, channel) go out at `refreshFraction` (0.8) of the lifetime.
///   A ChannelBind refreshes the permission too (RFC 8656 §12.2), but permissions (5 min) expire
///   before channels (10 min), so permissions are refreshed on their own schedule either way.
/// - Any request that times out while allocated means the relay is unreachable: the allocation is
///   reported lost, not just the permission or channel.
/// - Success responses must carry valid integrity; error responses too, except 400, 401 and 438,
///   which a server sends before it has authenticated the request (RFC 8489 §9.2.5). A response
///   that fails the check is dropped and counted, and the request keeps being retransmitted.
/// - PASSWORD-ALGORITHMS is honoured only when the nonce carries the RFC 8489 §9.2 cookie with
///   the "password algorithms" bit (downgrade protection, §9.2.4); then SHA-256 is chosen if
///   offered (and allowed) and the request signed with MESSAGE-INTEGRITY-SHA256.
/// - After a loss, `allocate` makes a new allocation and reinstalls the permissions and channels
///   that were asked for, with the same channel numbers.
public struct TURNClient: Sendable {
    public private(set) var config: TURNClientConfig
    public internal(set) var state: State = .idle
    public internal(set) var stats = TURNClientStats()

    public enum State: Sendable, Equatable {
        case idle
        case allocating
        case allocated(relayed: SocketAddress, mapped: SocketAddress?)
        case deallocating
        case deallocated
        case failed(TURNFailure)
    }

    /// The realm the server announced in its 401 (nil before the first challenge).
    public var realm: String? { auth?.realm }

    /// Changes how requests sent from now on are retransmitted (a caller with several phases,
    /// such as a benchmark, gives each its own patience).
    public mutating func setRetransmission(_ schedule: RetransmissionSchedule) { config.retransmission = schedule }

    /// The relayed transport address while allocated.
    public var relayedAddress: SocketAddress? {
        if case .allocated(let r, _) = state { return r }
        return nil
    }

    public var mappedAddress: SocketAddress? {
        if case .allocated(_, let m) = state { return m }
        return nil
    }

    // MARK: Authentication state (RFC 8489 §9.2)

    struct Auth {
        var realm: String
        var nonce: String
        /// PASSWORD-ALGORITHMS as the server sent it, echoed verbatim (§9.2.4); nil for MD5 without
        /// negotiation (RFC 5389 servers such as coturn).
        var offered: [PasswordAlgorithm]?
        var algorithm: PasswordAlgorithm
        var key: [UInt8]
        var integrity: IntegrityAlgorithm
    }

    var auth: Auth?

    // MARK: Transactions

    enum RequestKind: Equatable {
        case allocate
        case refresh(lifetime: UInt32)
        case createPermission(IPAddress)
        case channelBind(peer: SocketAddress, channel: UInt16)

        var method: STUN.Method {
            switch self {
            case .allocate: .allocate
            case .refresh: .refresh
            case .createPermission: .createPermission
            case .channelBind: .channelBind
            }
        }
    }

    struct Pending {
        var kind: RequestKind
        var bytes: [UInt8]
        /// The key the request was signed with (nil: sent without integrity).
        var key: [UInt8]?
        var transmissions: Int
        var nextAt: Timestamp
        var staleRetries: Int
        var challengeRetries: Int
    }

    var pending: [TransactionID: Pending] = [:]

    // MARK: Allocation, permissions and channels

    var allocationExpiresAt: Timestamp = .distantFuture
    var allocationRefreshAt: Timestamp = .distantFuture
    /// What the server granted last: a refresh without `requestedLifetime` asks for it again.
    var grantedLifetimeSeconds: UInt32 = 600

    struct Installed {
        /// Nil until the server confirmed it (and again after a loss).
        var expiresAt: Timestamp?
        var refreshAt: Timestamp = .distantFuture
        var inFlight = false
    }

    var permissions: [IPAddress: Installed] = [:]
    struct Channel {
        var number: UInt16
        var state = Installed()
    }

    var channels: [SocketAddress: Channel] = [:]
    var channelPeers: [UInt16: SocketAddress] = [:]
    var nextChannel: UInt16

    var transmits = OutputQueue<TURNTransmit>()
    var events = OutputQueue<TURNClientEvent>()

    public init(config: TURNClientConfig) {
        self.config = config
        nextChannel = config.channelRange.lowerBound
    }

    // MARK: Outputs

    public mutating func pollTransmit() -> TURNTransmit? { transmits.next() }

    public mutating func pollEvent() -> TURNClientEvent? { events.next() }

    /// When `handleTimeout` must next be called (`.distantFuture`: nothing scheduled).
    public var nextDeadline: Timestamp {
        var d = Timestamp.distantFuture
        for p in pending.values { d = min(d, p.nextAt) }
        guard case .allocated = state else { return d }
        d = min(d, allocationRefreshAt, allocationExpiresAt)
        for p in permissions.values where p.expiresAt != nil && !p.inFlight { d = min(d, p.refreshAt) }
        for c in channels.values where c.state.expiresAt != nil && !c.state.inFlight { d = min(d, c.state.refreshAt) }
        return d
    }

    // MARK: Requests the owner makes

    /// Starts an allocation (RFC 8656 §7.1). From `.idle`, `.failed`, `.deallocated` or after a
    /// loss; ignored while allocating or allocated. A known realm and nonce are reused (a stale
    /// one costs one 438 round trip), else the first Allocate goes out unauthenticated and the
    /// 401 supplies them.
    public mutating func allocate(now: Timestamp) {
        switch state {
        case .allocating, .allocated, .deallocating: return
        case .idle, .deallocated, .failed: break
        }
        state = .allocating
        send(.allocate, now: now)
    }

    /// Asks for a permission for `peer` (RFC 8656 §9); kept and refreshed until removed. Sent at
    /// once when allocated, else when the allocation is made.
    public mutating func createPermission(for peer: IPAddress, now: Timestamp) {
        if permissions[peer] == nil { permissions[peer] = Installed() }
        installIfNeeded(permission: peer, now: now)
    }

    /// Refreshes the allocation now rather than at its schedule: whether the server still holds
    /// it (a 437 answer reports `allocationLost(.allocationMismatch)`). For a path through it that
    /// stopped answering. Nothing happens unless allocated with no refresh in flight.
    public mutating func checkAllocation(now: Timestamp) {
        guard case .allocated = state, allocationRefreshAt != .distantFuture else { return }
        allocationRefreshAt = .distantFuture  // until the answer
        send(.refresh(lifetime: requestedLifetimeSeconds ?? grantedLifetimeSeconds), now: now)
    }

    /// Binds a channel to `peer` (RFC 8656 §12) and returns its number (the same number when
    /// asked again); nil when all numbers in `channelRange` are in use. Also installs the
    /// permission for the peer's address, which the binding implies.
    @discardableResult
    public mutating func bindChannel(to peer: SocketAddress, now: Timestamp) -> UInt16? {
        if channels[peer] == nil {
            guard let n = freeChannelNumber() else { return nil }
            channels[peer] = Channel(number: n)
            channelPeers[n] = peer
        }
        if permissions[peer.ip] == nil {
            // The ChannelBind installs it; record it so it is refreshed on its own schedule.
            permissions[peer.ip] = Installed()
        }
        installIfNeeded(channel: peer, now: now)
        return channels[peer]?.number
    }

    /// The channel bound (confirmed by the server) to `peer`.
    public func channel(for peer: SocketAddress) -> UInt16? {
        guard let c = channels[peer], c.state.expiresAt != nil else { return nil }
        return c.number
    }

    /// Whether the server confirmed a permission for `peer` that has not expired.
    public func hasPermission(for peer: IPAddress, now: Timestamp) -> Bool {
        guard let e = permissions[peer]?.expiresAt else { return false }
        return now < e
    }

    /// Frees the allocation: Refresh with LIFETIME 0 (RFC 8656 §8). Permissions and channels are
    /// forgotten. `.deallocated` follows the answer (or the timeout).
    public mutating func deallocate(now: Timestamp) {
        switch state {
        case .allocated:
            pending.removeAll()
            permissions.removeAll()
            channels.removeAll()
            channelPeers.removeAll()
            state = .deallocating
            send(.refresh(lifetime: 0), now: now)
        case .allocating:
            pending.removeAll()
            state = .idle
        case .idle, .deallocating, .deallocated, .failed:
            return
        }
    }

    // MARK: Timers

    public mutating func handleTimeout(now: Timestamp) {
        // Retransmissions and timeouts, in a stable order so runs are reproducible.
        let due = pending.filter { $0.value.nextAt <= now }.sorted { $0.value.nextAt < $1.value.nextAt }
        for (id, var p) in due {
            guard pending[id] != nil else { continue }  // a timeout above may have cleared it
            if p.transmissions >= config.retransmission.transmissions {
                pending[id] = nil
                stats.transactionsTimedOut += 1
                transactionFailed(p.kind, .timeout, now: now)
                continue
            }
            p.transmissions += 1
            p.nextAt = p.nextAt + config.retransmission.wait(after: p.transmissions)
            if p.nextAt <= now { p.nextAt = now + config.retransmission.wait(after: p.transmissions) }
            pending[id] = p
            stats.retransmissions += 1
            transmits.append(TURNTransmit(destination: config.server, bytes: p.bytes))
        }
        guard case .allocated = state else { return }
        if now >= allocationExpiresAt {
            lose(.expired, now: now)
            return
        }
        if now >= allocationRefreshAt {
            allocationRefreshAt = .distantFuture  // until the answer
            send(.refresh(lifetime: requestedLifetimeSeconds ?? grantedLifetimeSeconds), now: now)
        }
        for (ip, p) in permissions.sorted(by: { $0.value.refreshAt < $1.value.refreshAt }) {
            guard let expires = p.expiresAt, !p.inFlight, now >= p.refreshAt else { continue }
            if now >= expires { permissions[ip]?.expiresAt = nil }
            permissions[ip]?.inFlight = true
            send(.createPermission(ip), now: now)
        }
        for (peer, c) in channels.sorted(by: { $0.value.number < $1.value.number }) {
            guard let expires = c.state.expiresAt, !c.state.inFlight, now >= c.state.refreshAt else { continue }
            if now >= expires { channels[peer]?.state.expiresAt = nil }
            channels[peer]?.state.inFlight = true
            send(.channelBind(peer: peer, channel: c.number), now: now)
        }
    }

    var requestedLifetimeSeconds: UInt32? {
        config.requestedLifetime.map { UInt32(clamping: $0.components.seconds) }
    }

    // MARK: Sending requests

    mutating func send(_ kind: RequestKind, now: Timestamp) {
        let id = TransactionID.random()
        let (bytes, key) = encodeRequest(kind, id: id)
        pending[id] = Pending(kind: kind, bytes: bytes, key: key, transmissions: 1,
                              nextAt: now + config.retransmission.wait(after: 1), staleRetries: 0, challengeRetries: 0)
        stats.requestsSent += 1
        transmits.append(TURNTransmit(destination: config.server, bytes: bytes))
    }

    /// Sends `kind` again as a new transaction (new credentials or nonce change the bytes, and
    /// RFC 8489 §6.2 makes that a new transaction), keeping its retry counts.
    mutating func resend(_ old: Pending, now: Timestamp, stale: Bool) {
        let id = TransactionID.random()
        let (bytes, key) = encodeRequest(old.kind, id: id)
        var p = old
        p.bytes = bytes
        p.key = key
        p.transmissions = 1
        p.nextAt = now + config.retransmission.wait(after: 1)
        if stale { p.staleRetries += 1 } else { p.challengeRetries += 1 }
        pending[id] = p
        stats.requestsSent += 1
        transmits.append(TURNTransmit(destination: config.server, bytes: bytes))
    }

    func encodeRequest(_ kind: RequestKind, id: TransactionID) -> ([UInt8], [UInt8]?) {
        var attrs: [Attribute]
        switch kind {
        case .allocate:
            attrs = [.requestedTransport(17)]
            if let f = config.requestedAddressFamily { attrs.append(.requestedAddressFamily(f)) }
            if let l = requestedLifetimeSeconds { attrs.append(.lifetime(l)) }
        case .refresh(let l):
            attrs = [.lifetime(l)]
        case .createPermission(let ip):
            attrs = [.xorPeerAddress(SocketAddress(ip: ip, port: 0))]
        case .channelBind(let peer, let n):
            attrs = [.channelNumber(n), .xorPeerAddress(peer)]
        }
        if let s = config.software { attrs.append(.software(s)) }
        let type = MessageType(method: kind.method, messageClass: .request)
        guard let auth else {
            return (Message(type: type, transactionID: id, attributes: attrs).encode(fingerprint: config.fingerprint), nil)
        }
        attrs += [.username(config.credentials.username), .realm(auth.realm), .nonce(auth.nonce)]
        if let offered = auth.offered {
            attrs += [.passwordAlgorithms(offered), .passwordAlgorithm(auth.algorithm)]
        }
        let m = Message(type: type, transactionID: id, attributes: attrs)
        let bytes = m.encode(integrity: MessageIntegrity(key: auth.key, algorithm: auth.integrity),
                             fingerprint: config.fingerprint)
        return (bytes, auth.key)
    }

    // MARK: Installing permissions and channels

    mutating func installIfNeeded(permission ip: IPAddress, now: Timestamp) {
        guard case .allocated = state, let p = permissions[ip], p.expiresAt == nil, !p.inFlight else { return }
        permissions[ip]?.inFlight = true
        send(.createPermission(ip), now: now)
    }

    mutating func installIfNeeded(channel peer: SocketAddress, now: Timestamp) {
        guard case .allocated = state, let c = channels[peer], c.state.expiresAt == nil, !c.state.inFlight else { return }
        channels[peer]?.state.inFlight = true
        send(.channelBind(peer: peer, channel: c.number), now: now)
    }

    mutating func installAll(now: Timestamp) {
        for peer in channels.keys.sorted(by: { channels[$0]!.number < channels[$1]!.number }) {
            installIfNeeded(channel: peer, now: now)
        }
        // Peers with a channel got their permission from the ChannelBind; the rest need one.
        for ip in permissions.keys.sorted(by: { $0.description < $1.description })
        where !channels.keys.contains(where: { $0.ip == ip }) {
            installIfNeeded(permission: ip, now: now)
        }
    }

    mutating func freeChannelNumber() -> UInt16? {
        let range = config.channelRange
        let count = Int(range.upperBound - range.lowerBound) + 1
        guard channelPeers.count < count else { return nil }
        for _ in 0..<count {
            let n = nextChannel
            nextChannel = n == range.upperBound ? range.lowerBound : n + 1
            if channelPeers[n] == nil { return n }
        }
        return nil
    }

    // MARK: Losing the allocation

    /// Forgets everything the server held for us; the peers asked for stay, uninstalled.
    mutating func forgetInstalled() {
        pending.removeAll()
        for ip in permissions.keys { permissions[ip] = Installed() }
        for peer in channels.keys { channels[peer]?.state = Installed() }
        allocationExpiresAt = .distantFuture
        allocationRefreshAt = .distantFuture
    }

    mutating func lose(_ reason: TURNFailure, now: Timestamp) {
        forgetInstalled()
        state = .failed(reason)
        events.append(.allocationLost(reason))
    }

    mutating func transactionFailed(_ kind: RequestKind, _ reason: TURNFailure, now: Timestamp) {
        switch kind {
        case .allocate:
            forgetInstalled()
            state = .failed(reason)
            events.append(.allocationFailed(reason))
        case .refresh(let lifetime) where lifetime == 0:
            // Nothing left to lose: the allocation is gone either way (the server expires it).
            state = .deallocated
            events.append(.deallocated)
        case .refresh:
            lose(reason, now: now)
        case .createPermission(let ip):
            if reason == .timeout || reason == .allocationMismatch || reason == .unauthenticated {
                lose(reason, now: now)
                return
            }
            permissions[ip] = nil
            events.append(.permissionFailed(ip, reason))
        case .channelBind(let peer, let n):
            if reason == .timeout || reason == .allocationMismatch || reason == .unauthenticated {
                lose(reason, now: now)
                return
            }
            channels[peer] = nil
            channelPeers[n] = nil
            // The permission recorded for the binding was never asked for on its own.
            if let p = permissions[peer.ip], p.expiresAt == nil, !p.inFlight { permissions[peer.ip] = nil }
            events.append(.channelBindFailed(peer: peer, reason))
        }
    }
}
