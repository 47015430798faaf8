import FZCore

/// The per-peer timers of whitepaper §6, as deadlines instead of OS timers. The event hooks are
/// named after the kernel's and wireguard-go's `timers*` functions, which implement §6 the same
/// way; `Peer` calls them and `Peer.handleTimeout` acts on whatever is due.
struct Timers: Sendable {
    /// Resend the initiation (REKEY_TIMEOUT + jitter after the last one, §6.4).
    var retransmitHandshake: Timestamp?
    /// When the current series of initiations began; retries stop REKEY_ATTEMPT_TIME later.
    var handshakeAttemptStarted: Timestamp?
    /// Passive keepalive: data arrived and nothing was sent back for KEEPALIVE_TIMEOUT (§6.5).
    var sendKeepalive: Timestamp?
    var needAnotherKeepalive = false
    /// Data was sent and nothing came back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: new handshake (§6.5).
    var newHandshake: Timestamp?
    /// Erase all keys 3 × REJECT_AFTER_TIME after the last session was derived (§6.3).
    var eraseKeys: Timestamp?
    /// Persistent keepalive (wg(8), beyond §6.5): this long after the last authenticated packet
    /// either way.
    var persistentKeepalive: Timestamp?
    let persistentKeepaliveInterval: Duration?
    /// At most one initiation per REKEY_TIMEOUT (§6.2).
    var lastInitiationSent: Timestamp?
    /// A handshake is wanted (rekey, stale session, queued data) and not yet sent.
    var handshakeRequested = false
    /// Whether the near-REJECT_AFTER_TIME rekey on receive was already asked for (§6.2).
    var sentLastMinuteHandshake = false

    init(persistentKeepalive interval: Duration?) {
        persistentKeepaliveInterval = interval
        // Like wireguard-go, a peer with a persistent keepalive sends one (and so handshakes) at once.
        persistentKeepalive = interval == nil ? nil : .zero
    }

    func canInitiate(at now: Timestamp) -> Bool {
        lastInitiationSent.map { now - $0 >= Constants.rekeyTimeout } ?? true
    }

    /// Read after every call into a peer, so it allocates nothing.
    var nextDeadline: Timestamp {
        var deadline = Timestamp.distantFuture
        @inline(__always) func consider(_ candidate: Timestamp?) {
            if let c = candidate, c < deadline { deadline = c }
        }
        consider(retransmitHandshake)
        consider(newHandshake)
        consider(sendKeepalive)
        consider(persistentKeepalive)
        consider(eraseKeys)
        if handshakeRequested { consider(lastInitiationSent.map { $0 + Constants.rekeyTimeout } ?? .zero) }
        return deadline
    }

    // MARK: Events

    /// After a data message (not a keepalive) was sent.
    mutating func dataSent(now: Timestamp, jitter: () -> Duration) {
        if newHandshake == nil { newHandshake = now + Constants.keepaliveTimeout + Constants.rekeyTimeout + jitter() }
    }

    /// After a data message (not a keepalive) was received.
    mutating func dataReceived(now: Timestamp) {
        if sendKeepalive == nil { sendKeepalive = now + Constants.keepaliveTimeout } else { needAnotherKeepalive = true }
    }

    /// After any authenticated message was sent: data, keepalive or handshake.
    mutating func anyAuthenticatedPacketSent() { sendKeepalive = nil }

    /// After any authenticated message was received.
    mutating func anyAuthenticatedPacketReceived() { newHandshake = nil }

    /// Before sending or after receiving any authenticated message.
    mutating func anyAuthenticatedPacketTraversal(now: Timestamp) {
        if let interval = persistentKeepaliveInterval { persistentKeepalive = now + interval }
    }

    /// After an initiation was sent; a retry keeps the series' start time.
    mutating func handshakeInitiated(now: Timestamp, jitter: Duration, isRetry: Bool) {
        lastInitiationSent = now
        retransmitHandshake = now + Constants.rekeyTimeout + jitter
        handshakeRequested = false
        if !isRetry || handshakeAttemptStarted == nil { handshakeAttemptStarted = now }
    }

    /// A new handshake is wanted; a non-retry request starts a new series of attempts.
    mutating func requestHandshake(now: Timestamp) {
        handshakeRequested = true
        handshakeAttemptStarted = now
    }

    /// After the response was consumed (initiator) or the first data arrived on the new session
    /// (responder).
    mutating func handshakeComplete() {
        retransmitHandshake = nil
        handshakeAttemptStarted = nil
        handshakeRequested = false
        sentLastMinuteHandshake = false
    }

    /// After a new session was derived.
    mutating func sessionDerived(now: Timestamp) { eraseKeys = now + Constants.zeroKeysAfter }
}

extension Peer {
    /// The earliest instant `handleTimeout` has something to do; `Timestamp.distantFuture` if
    /// nothing is scheduled. Re-read it after every call into the peer.
    public var nextDeadline: Timestamp { timers.nextDeadline }

    /// Runs every timer due at `now` (§6) and returns what to send or report, in order.
    public mutating func handleTimeout(now: Timestamp) -> [TimerAction] {
        var actions: [TimerAction] = []

        // §6.4: resend the initiation, or give up after REKEY_ATTEMPT_TIME.
        if let at = timers.retransmitHandshake, now >= at {
            timers.retransmitHandshake = nil
            if let start = timers.handshakeAttemptStarted, now - start >= Constants.rekeyAttemptTime {
                actions.append(.handshakeGaveUp(droppedPackets: giveUpHandshake(now: now)))
            } else if let bytes = makeInitiation(now: now, isRetry: true) {
                actions.append(.sendHandshakeInitiation(bytes))
            }
        }

        // §6.5: we sent data and heard nothing back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT.
        if let at = timers.newHandshake, now >= at {
            timers.newHandshake = nil
            timers.requestHandshake(now: now)
        }

        // §6.5: passive keepalive, and the persistent one.
        var keepaliveDue = false
        var rearmPassive = false
        if let at = timers.sendKeepalive, now >= at {
            timers.sendKeepalive = nil
            keepaliveDue = true
            rearmPassive = timers.needAnotherKeepalive
            timers.needAnotherKeepalive = false
        }
        if let at = timers.persistentKeepalive, now >= at {
            timers.persistentKeepalive = nil
            keepaliveDue = true
        }
        if keepaliveDue, let bytes = makeKeepalive(now: now) {
            actions.append(.sendKeepalive(bytes))
        }
        if rearmPassive { timers.sendKeepalive = now + Constants.keepaliveTimeout }

        // A handshake someone asked for, once REKEY_TIMEOUT since the last initiation has passed.
        if timers.handshakeRequested, timers.canInitiate(at: now), let bytes = makeInitiation(now: now, isRetry: false) {
            actions.append(.sendHandshakeInitiation(bytes))
        }

        // §6.3: nothing new for 3 × REJECT_AFTER_TIME: erase every key.
        if let at = timers.eraseKeys, now >= at {
            eraseAllKeys()
            actions.append(.keysErased)
        }
        return actions
    }

    /// A handshake initiation as bytes, or nil if none can be made (invalid peer key).
    mutating func makeInitiation(now: Timestamp, isRetry: Bool) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: Layout.Initiation.size)
        let n = bytes.withUnsafeMutableBytes { writeInitiation(into: $0, now: now, isRetry: isRetry) }
        return n == nil ? nil : bytes
    }

    /// A keepalive on the current session. Without a usable session, wireguard-go's rule: queue an
    /// empty packet and ask for a handshake, so the keepalive goes out once there is one.
    mutating func makeKeepalive(now: Timestamp) -> [UInt8]? {
        guard current?.canSend(at: now, limits: limits) == true else {
            if queue.isEmpty { queue.append([]) }
            timers.requestHandshake(now: now)
            return nil
        }
        var bytes = [UInt8](repeating: 0, count: Layout.Transport.minimumSize)
        let n = bytes.withUnsafeMutableBytes { sealOnCurrent(UnsafeRawBufferPointer(start: nil, count: 0), into: $0, now: now) }
        return Array(bytes[0..<n])
    }

    private mutating func giveUpHandshake(now: Timestamp) -> Int {
        let dropped = queue.count
        for _ in 0..<dropped { stats.dropped.count(.handshakeFailed) }
        queue.removeAll()
        initiation = nil
        timers.sendKeepalive = nil
        timers.handshakeRequested = false
        timers.handshakeAttemptStarted = nil
        if timers.eraseKeys == nil { timers.eraseKeys = now + Constants.zeroKeysAfter }
        return dropped
    }

    private mutating func eraseAllKeys() {
        current = nil
        previous = nil
        next = nil
        initiation = nil
        for _ in queue { stats.dropped.count(.handshakeFailed) }
        queue.removeAll()
        timers.eraseKeys = nil
        timers.retransmitHandshake = nil
        timers.handshakeRequested = false
        timers.handshakeAttemptStarted = nil
        timers.sendKeepalive = nil
        timers.newHandshake = nil
    }
}
