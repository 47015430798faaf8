import FZCore

/// Identifies a peer within a `Device`: its 24-bit index slot.
public struct PeerID: Hashable, Sendable, CustomStringConvertible {
    public let slot: UInt32
    public var description: String { "peer#\(slot)" }
}

/// Many peers behind one static key, and the lookup that routes each incoming datagram to its
/// peer (whitepaper §5.4): transport messages, responses and cookie replies by their receiver
/// index (whose top 24 bits are the peer's slot), and an initiation by decrypting the initiator's
/// static key with ours, the one step of the handshake that needs no peer.
///
/// MAC1, and under load MAC2 and the per-source rate limit (§5.3), are checked here once before
/// any Curve25519 work. Drops that happen before a peer is known are counted in `dropped`; the
/// rest in the peer's stats.
public struct Device: Sendable {
    public let publicKey: PublicKey
    let privateKey: PrivateKey
    /// While true, handshake messages need a valid MAC2 and get a cookie reply otherwise (§5.3).
    /// The I/O layer sets it, e.g. when the handshake queue is long (wireguard-go: 1/8 full).
    public var underLoad = false
    /// Under load, a handshake message with a valid MAC2 still needs a token from its source's
    /// bucket (wireguard-go, Linux: 20 per second, bursts of 5); without one it is dropped
    /// (`DropReason.rateLimited`) before any Curve25519 work.
    public var rateLimiter = HandshakeRateLimiter()
    /// The wall clock given to peers added from now on.
    public var wallClock: WallClock
    public private(set) var dropped = DropCounters()
    public private(set) var cookieRepliesSent: UInt64 = 0

    var checker: CookieChecker
    var peers: [Peer?] = []
    var slotsByKey: [PublicKey: UInt32] = [:]
    var freeSlots: [UInt32] = []
    /// When each peer next needs its timers run (see `DeadlineSchedule`).
    var schedule = DeadlineSchedule()

    public init(privateKey: PrivateKey, wallClock: WallClock) {
        self.privateKey = privateKey
        publicKey = privateKey.publicKey
        self.wallClock = wallClock
        checker = CookieChecker(localPublic: privateKey.publicKey)
    }

    /// Adds a peer; nil if its key is already configured or is our own.
    @discardableResult
    public mutating func addPeer(_ configuration: PeerConfiguration) -> PeerID? {
        guard slotsByKey[configuration.publicKey] == nil, configuration.publicKey != publicKey else { return nil }
        let slot: UInt32
        if let reused = freeSlots.popLast() {
            slot = reused
        } else {
            guard peers.count < 1 << 24 else { return nil }
            slot = UInt32(peers.count)
            peers.append(nil)
        }
        peers[Int(slot)] = Peer(localKey: privateKey, configuration: configuration, wallClock: wallClock, indexSlot: slot)
        slotsByKey[configuration.publicKey] = slot
        reschedule(slot)
        return PeerID(slot: slot)
    }

    public mutating func removePeer(_ id: PeerID) {
        guard let peer = peers[Int(id.slot)] else { return }
        slotsByKey[peer.publicKey] = nil
        peers[Int(id.slot)] = nil
        freeSlots.append(id.slot)
        schedule.remove(id.slot)
    }

    public func peerID(for key: PublicKey) -> PeerID? { slotsByKey[key].map(PeerID.init) }

    public var peerIDs: [PeerID] { peers.indices.compactMap { peers[$0] == nil ? nil : PeerID(slot: UInt32($0)) } }

    /// The peer, mutated in place (no copy of its sessions). Every mutation through here
    /// reschedules the peer's timers, so nothing that changes a peer can leave the schedule stale.
    public subscript(id: PeerID) -> Peer {
        get { peers[Int(id.slot)]! }
        _modify {
            yield &peers[Int(id.slot)]!
            reschedule(id.slot)
        }
    }

    /// Reads the peer's next deadline in place and tells the schedule.
    @inline(__always)
    mutating func reschedule(_ slot: UInt32) {
        let deadline = peers.withUnsafeBufferPointer { $0[Int(slot)]?.nextDeadline } ?? .distantFuture
        schedule.reschedule(slot, deadline: deadline)
    }

    /// Whether `id` names a configured peer (a removed peer's slot may be free or reused).
    public func contains(_ id: PeerID) -> Bool {
        let slot = Int(id.slot)
        guard slot < peers.count else { return false }
        return peers.withUnsafeBufferPointer { $0[slot] != nil }
    }

    /// The peer's counters, read in place.
    public func stats(of id: PeerID) -> PeerStatistics? {
        let slot = Int(id.slot)
        guard slot < peers.count else { return nil }
        return peers.withUnsafeBufferPointer { $0[slot]?.stats }
    }

    /// The peer's current endpoint, read in place. (`self[id].endpoint` goes through the
    /// subscript's getter, which copies the whole peer, retaining and releasing its sessions:
    /// the data path asks once per packet.)
    public func endpoint(of id: PeerID) -> SocketAddress? {
        let slot = Int(id.slot)
        // An unsafe buffer is not bounds-checked in release builds: check here.
        guard slot < peers.count else { return nil }
        return peers.withUnsafeBufferPointer { $0[slot]?.endpoint }
    }

    /// The earliest deadline of any peer, read off the schedule in O(1). It may be a little early
    /// (a peer whose timers moved later since): `handleTimeout` then finds nothing due for it.
    public var nextDeadline: Timestamp { schedule.earliest }

    /// Runs the timers of every peer that is due: O(log n) per due peer, none for the others.
    public mutating func handleTimeout(now: Timestamp) -> [(PeerID, TimerAction)] {
        var actions: [(PeerID, TimerAction)] = []
        while let slot = schedule.popDue(now: now) {
            let index = Int(slot)
            guard index < peers.count, peers[index] != nil else { continue }
            if peers[index]!.nextDeadline <= now {
                let id = PeerID(slot: slot)
                for action in peers[index]!.handleTimeout(now: now) { actions.append((id, action)) }
            }
            reschedule(slot)
        }
        return actions
    }

    /// Routes and handles one datagram; `peer` is nil when it was dropped or answered (cookie
    /// reply) before a peer was known.
    public mutating func decapsulate(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress,
                                     into out: UnsafeMutableRawBufferPointer,
                                     now: Timestamp) -> (peer: PeerID?, result: DecapsulateResult) {
        guard let type = MessageType.classify(datagram) else { return drop(.malformed) }
        if let offsets = MACOffsets.of(type) {
            guard checker.hasValidMAC1(datagram, offsets) else { return drop(.invalidMAC1) }
            if underLoad && !checker.hasValidMAC2(datagram, offsets, source: source, now: now) {
                guard out.count >= Layout.CookieReply.size else { return drop(.bufferTooSmall) }
                cookieRepliesSent += 1
                let n = checker.writeCookieReply(to: datagram, offsets, receiver: datagram.u32(at: 4), source: source,
                                                 now: now, into: out)
                return (nil, .cookieReply(n))
            }
            if underLoad && !rateLimiter.allow(source.ip, now: now) { return drop(.rateLimited) }
        }
        switch type {
        case .initiation:
            let fields = InitiationFields(parsing: datagram)
            guard let partial = Noise.beginConsumingInitiation(fields, localStatic: privateKey) else {
                return drop(.authenticationFailed)
            }
            guard let slot = slotsByKey[partial.initiatorStatic] else { return drop(.unknownPeer) }
            let id = PeerID(slot: slot)
            return (id, self[id].receiveInitiation(fields, partial, from: source, into: out, now: now))
        case .response:
            guard let id = route(datagram.u32(at: Layout.Response.receiver)) else { return drop(.unknownReceiver) }
            return (id, self[id].receiveResponse(datagram, from: source, into: out, now: now))
        case .cookieReply:
            guard let id = route(datagram.u32(at: Layout.CookieReply.receiver)) else { return drop(.unknownReceiver) }
            return (id, self[id].receiveCookieReply(datagram, now: now))
        case .transport:
            guard let id = route(datagram.u32(at: Layout.Transport.receiver)) else { return drop(.unknownReceiver) }
            return (id, self[id].receiveTransport(datagram, from: source, into: out, now: now))
        }
    }

    public mutating func decapsulate(_ datagram: [UInt8], from source: SocketAddress, into out: inout [UInt8],
                                     now: Timestamp) -> (peer: PeerID?, result: DecapsulateResult) {
        datagram.withUnsafeBytes { d in out.withUnsafeMutableBytes { decapsulate(d, from: source, into: $0, now: now) } }
    }

    private func route(_ receiver: UInt32) -> PeerID? {
        let slot = Int(receiver >> 8)
        return slot < peers.count && peers[slot] != nil ? PeerID(slot: UInt32(slot)) : nil
    }

    private mutating func drop(_ reason: DropReason) -> (peer: PeerID?, result: DecapsulateResult) {
        dropped.count(reason)
        return (nil, .drop(reason))
    }
}
