import FZCore

/// How one peer is configured (the `[Peer]` section of a WireGuard configuration).
public struct PeerConfiguration: Sendable {
    public var publicKey: PublicKey
    public var presharedKey: PresharedKey?
    /// Send a keepalive after this long without any authenticated packet either way (wg(8)'s
    /// PersistentKeepalive; the whitepaper's §6.5 keepalive is only the passive one).
    public var persistentKeepalive: Duration?
    /// Where to send until the peer is heard from (it then follows the peer's source, §2.1).
    public var endpoint: SocketAddress?
    /// REKEY/REJECT_AFTER_MESSAGES; tests shrink them.
    public var limits: Limits
    /// Padding stops at this size (wireguard-go pads to a multiple of 16 but never beyond the MTU);
    /// nil pads every packet to a multiple of 16.
    public var mtu: Int?
    /// Packets kept while a handshake is under way (wireguard-go keeps 128).
    public var maxQueuedPackets: Int
    /// The jitter added to REKEY_TIMEOUT (§6.4: up to 333 ms); injectable for deterministic tests.
    public var jitter: @Sendable () -> Duration

    public init(publicKey: PublicKey, presharedKey: PresharedKey? = nil, persistentKeepalive: Duration? = nil,
                endpoint: SocketAddress? = nil, limits: Limits = .standard, mtu: Int? = nil, maxQueuedPackets: Int = 128,
                jitter: @escaping @Sendable () -> Duration = PeerConfiguration.randomJitter) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.persistentKeepalive = persistentKeepalive
        self.endpoint = endpoint
        self.limits = limits
        self.mtu = mtu
        self.maxQueuedPackets = maxQueuedPackets
        self.jitter = jitter
    }

    /// 0-333 ms, uniformly, from libsodium's CSPRNG.
    public static let randomJitter: @Sendable () -> Duration = {
        .milliseconds(Int64(Sodium.uniform(UInt32(Constants.rekeyTimeoutJitterLimit.nanosecondsClamped / 1_000_000))))
    }
}

/// The protocol state for one peer, sans-IO in the manner of boringtun's `Tunn`: it encrypts
/// outgoing packets (`encapsulate`), handles every incoming message (`decapsulate`), runs the §6
/// timers (`handleTimeout`, `nextDeadline`) and writes into caller-owned buffers. `now` is
/// always a parameter; the TAI64N wall clock comes from a `WallClock` the caller anchors.
///
/// Sessions (§5.4.5, §6.3 key rotation): `current` sends and receives; `previous` still
/// receives (packets in flight during a rotation); `next` is a responder's new session, used only
/// after the initiator has sent on it, since only then does the responder know the initiator
/// has it. The initiator sends on its new session at once.
///
/// Receiver indices are `slot << 8 | counter`: the 24-bit slot (given by the `Device`) finds the
/// peer without a table, and the 8-bit counter tells its sessions apart, as in boringtun. The
/// whitepaper draws them at random; the peer only echoes them back, so any value unique among
/// the receiver's live sessions interoperates, and this scheme guarantees uniqueness.
public struct Peer: Sendable {
    public let publicKey: PublicKey
    public var localPublicKey: PublicKey { localKey.publicKey }
    public private(set) var configuration: PeerConfiguration
    /// Where the peer was last heard from (or the configured endpoint): where to send.
    public internal(set) var endpoint: SocketAddress?
    /// When the last handshake completed.
    public internal(set) var lastHandshake: Timestamp?
    public internal(set) var stats = PeerStatistics()
    /// The wall clock initiations take their TAI64N timestamp from.
    public var wallClock: WallClock

    let localKey: PrivateKey
    /// `DH(Spriv_local, Spub_peer)`, computed once; nil if all zeros (then no handshake can work).
    let staticShared: SecretKey?
    /// `Q`: the pre-shared key, or 32 zero bytes (§5.2).
    let presharedKey: SecretKey
    let indexSlot: UInt32
    var indexCounter: UInt8

    var checker: CookieChecker
    var cookies: CookieJar
    var initiation: Noise.InitiatorState?
    var lastAcceptedTimestamp: TAI64N?
    var lastInitiationConsumedAt: Timestamp?
    var current: Session?
    var previous: Session?
    var next: Session?
    var timers: Timers
    var queue: [[UInt8]] = []

    var limits: Limits { configuration.limits }

    /// - Parameters:
    ///   - localKey: our static private key.
    ///   - indexSlot: 24 bits that start every receiver index of this peer (the device's slot);
    ///     random when nil.
    public init(localKey: PrivateKey, configuration: PeerConfiguration, wallClock: WallClock,
                indexSlot: UInt32? = nil) {
        let indexSlot = indexSlot ?? Sodium.uniform(1 << 24)
        precondition(indexSlot < 1 << 24, "the index slot has 24 bits")
        self.localKey = localKey
        self.configuration = configuration
        publicKey = configuration.publicKey
        endpoint = configuration.endpoint
        self.wallClock = wallClock
        staticShared = localKey.sharedSecret(with: configuration.publicKey)
        presharedKey = configuration.presharedKey?.secret ?? .zeros()
        self.indexSlot = indexSlot
        indexCounter = UInt8(truncatingIfNeeded: Sodium.uniform(256))
        checker = CookieChecker(localPublic: localKey.publicKey)
        cookies = CookieJar(peerPublic: configuration.publicKey)
        timers = Timers(persistentKeepalive: configuration.persistentKeepalive)
    }

    /// Packets waiting for a session.
    public var queuedPacketCount: Int { queue.count }

    /// Whether a session can carry data now.
    public func hasSession(at now: Timestamp) -> Bool { current?.canSend(at: now, limits: limits) == true }

    mutating func allocateIndex() -> UInt32 {
        indexCounter &+= 1
        return indexSlot << 8 | UInt32(indexCounter)
    }

    func owns(index: UInt32) -> Bool {
        initiation?.localIndex == index || current?.localIndex == index || previous?.localIndex == index
            || next?.localIndex == index
    }

    /// Counts a drop; the overloads return it as whatever the caller reports.
    mutating func drop(_ reason: DropReason) -> DecapsulateResult {
        stats.dropped.count(reason)
        return .drop(reason)
    }

    mutating func drop(_ reason: DropReason) -> EncapsulateResult {
        stats.dropped.count(reason)
        return .drop(reason)
    }

    mutating func drop(_ reason: DropReason) -> Int? {
        stats.dropped.count(reason)
        return nil
    }

    // MARK: Sending (§5.4.6)

    /// Encrypts `plaintext` (an IP packet, or empty for a keepalive) into `out`.
    ///
    /// With a usable session the transport message is written to `out` (`.datagram`). Otherwise
    /// the packet is copied to the queue and, unless one was sent less than REKEY_TIMEOUT ago, a
    /// handshake initiation is written instead. `plaintext` may already sit at `out[16...]`
    /// (headroom for the header), in which case it is encrypted in place.
    public mutating func encapsulate(_ plaintext: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                                     now: Timestamp) -> EncapsulateResult {
        if current?.canSend(at: now, limits: limits) == true {
            guard out.count >= Layout.Transport.headerSize + paddedLength(plaintext.count) + Sodium.tagSize else {
                return drop(.bufferTooSmall)
            }
            return .datagram(sealOnCurrent(plaintext, into: out, now: now))
        }
        enqueue(plaintext)
        timers.requestHandshake(now: now)
        if timers.canInitiate(at: now), out.count >= Layout.Initiation.size,
           let n = writeInitiation(into: out, now: now, isRetry: false) {
            return .handshakeInitiation(n)
        }
        return .queued
    }

    public mutating func encapsulate(_ plaintext: [UInt8], into out: inout [UInt8], now: Timestamp) -> EncapsulateResult {
        plaintext.withUnsafeBytes { p in out.withUnsafeMutableBytes { encapsulate(p, into: $0, now: now) } }
    }

    /// The next queued packet as a transport message in `out`, once a session exists; nil when
    /// the queue is empty or there is still no session. Call it until nil after
    /// `.handshakeCompleted`, and after any receive when `queuedPacketCount > 0`.
    public mutating func nextQueuedDatagram(into out: UnsafeMutableRawBufferPointer, now: Timestamp) -> Int? {
        guard let first = queue.first, current?.canSend(at: now, limits: limits) == true,
              out.count >= Layout.Transport.headerSize + paddedLength(first.count) + Sodium.tagSize
        else { return nil }
        queue.removeFirst()
        return first.withUnsafeBytes { sealOnCurrent($0, into: out, now: now) }
    }

    public mutating func nextQueuedDatagram(into out: inout [UInt8], now: Timestamp) -> Int? {
        out.withUnsafeMutableBytes { nextQueuedDatagram(into: $0, now: now) }
    }

    /// Seals on `current` (checked usable, `out` checked large enough) and runs the send-side
    /// timer and rekey rules.
    mutating func sealOnCurrent(_ plaintext: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                                now: Timestamp) -> Int {
        let n = current!.seal(plaintext, paddedLength: paddedLength(plaintext.count), into: out)
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketSent()
        if plaintext.count > 0 {
            timers.dataSent(now: now, jitter: configuration.jitter)
            stats.packetsSent += 1
            stats.bytesSent += UInt64(n)
        } else {
            stats.keepalivesSent += 1
        }
        keepKeyFreshSending(now: now)
        return n
    }

    /// §6.2: rekey after REKEY_AFTER_MESSAGES on any session, and after REKEY_AFTER_TIME on a
    /// session we initiated (only the initiator rekeys on time, so both sides do not at once).
    private mutating func keepKeyFreshSending(now: Timestamp) {
        guard let session = current else { return }
        if session.sendCounter >= limits.rekeyAfterMessages
            || (session.isInitiator && session.age(at: now) >= Constants.rekeyAfterTime) {
            if !timers.handshakeRequested && timers.retransmitHandshake == nil { timers.requestHandshake(now: now) }
        }
    }

    /// §5.4.6: zero padding to a multiple of 16, capped at the MTU.
    func paddedLength(_ count: Int) -> Int {
        let rounded = (count + 15) & ~15
        guard let mtu = configuration.mtu else { return rounded }
        return count >= mtu ? count : min(rounded, mtu)
    }

    private mutating func enqueue(_ plaintext: UnsafeRawBufferPointer) {
        if queue.count >= max(configuration.maxQueuedPackets, 1) {
            queue.removeFirst()
            stats.dropped.count(.queueFull)
        }
        queue.append(Array(plaintext))
    }

    /// Writes a new initiation (§5.4.2) into `out` and arms the retransmit timer.
    mutating func writeInitiation(into out: UnsafeMutableRawBufferPointer, now: Timestamp, isRetry: Bool) -> Int? {
        guard let staticShared else { return drop(.invalidPeerKey) }
        let index = allocateIndex()
        let timestamp = wallClock.timestamp(at: now)
        guard let (fields, state) = Noise.createInitiation(
            localStatic: localKey, remoteStatic: publicKey, staticShared: staticShared,
            ephemeral: .generate(), localIndex: index, payload: timestamp.bytes)
        else { return drop(.invalidPeerKey) }
        fields.write(into: out)
        cookies.stamp(out, .initiation, now: now)
        initiation = state
        timers.handshakeInitiated(now: now, jitter: configuration.jitter(), isRetry: isRetry)
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketSent()
        stats.handshakesInitiated += 1
        return Layout.Initiation.size
    }
}
