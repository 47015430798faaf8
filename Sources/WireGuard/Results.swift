/// What `Peer.encapsulate` did with an outgoing packet. Byte counts refer to the start of the
/// caller's buffer.
public enum EncapsulateResult: Equatable, Sendable {
    /// A transport message of this many bytes is ready to send.
    case datagram(Int)
    /// No session could carry the packet: it was queued, and a handshake initiation of this many
    /// bytes is ready to send.
    case handshakeInitiation(Int)
    /// No session could carry the packet: it was queued; a handshake is already under way.
    case queued
    case drop(DropReason)
}

/// What `Peer.decapsulate` / `Device.decapsulate` made of an incoming datagram.
public enum DecapsulateResult: Equatable, Sendable {
    /// An authenticated IP packet, decrypted into `buffer[range]` (the range starts at 16, where
    /// the ciphertext was, so the datagram's own buffer may be passed as output).
    case packet(Range<Int>)
    /// An authenticated keepalive (empty transport message): nothing to deliver.
    case keepalive
    /// A handshake initiation was accepted: send the response in the first bytes of the buffer.
    case handshakeResponse(Int)
    /// Under load and without a valid MAC2: send this cookie reply (first bytes of the buffer)
    /// instead of doing any Curve25519 work (§5.3).
    case cookieReply(Int)
    /// Our initiation was answered and the new session is current: send these first bytes of the
    /// buffer (the oldest queued packet, or a keepalive confirming the session to the responder),
    /// then drain the rest of the queue with `Peer.nextQueuedDatagram`.
    case handshakeCompleted(Int)
    /// The peer's cookie reply was accepted; the next initiation will carry MAC2.
    case cookieAccepted
    case drop(DropReason)

    /// Whether the message proved the sender holds the peer's keys (a transport message that
    /// decrypted, an accepted initiation, a response that completed our handshake). A cookie reply
    /// we sent proves nothing about the sender.
    @inlinable public var isAuthenticated: Bool {
        switch self {
        case .packet, .keepalive, .handshakeResponse, .handshakeCompleted: true
        case .cookieReply, .cookieAccepted, .drop: false
        }
    }
}

/// What a timer asked for (whitepaper §6). Handshake and keepalive messages are carried as
/// arrays: timers fire a few times a minute at most, so the allocation is off the hot path.
public enum TimerAction: Equatable, Sendable {
    case sendHandshakeInitiation([UInt8])
    case sendKeepalive([UInt8])
    /// REKEY_ATTEMPT_TIME passed without an answer: retries stop and queued packets were dropped.
    case handshakeGaveUp(droppedPackets: Int)
    /// 3 × REJECT_AFTER_TIME without a new handshake: all key material was erased.
    case keysErased
}

/// Why a datagram or packet was dropped. Every drop is counted in the peer's or device's
/// statistics; none of them is an error worth more than a counter.
public enum DropReason: Int, CaseIterable, Equatable, Sendable, CustomStringConvertible {
    /// Not one of the four message types at its size, or a bad inner IP header.
    case malformed
    /// A handshake message whose MAC1 is wrong.
    case invalidMAC1
    /// No session or handshake of ours has this receiver index.
    case unknownReceiver
    /// An initiation from a static key that is not a configured peer.
    case unknownPeer
    /// AEAD authentication failed (wrong key, tampering) or a DH result was zero.
    case authenticationFailed
    /// An initiation whose timestamp is not newer than the last accepted one (§5.1).
    case replayedInitiation
    /// More than one initiation within 20 ms from the same peer.
    case initiationFlood
    /// Under load: a handshake message with a valid MAC2 whose source used up its token bucket.
    case rateLimited
    /// A transport counter already seen or older than the replay window (§5.4.6).
    case replayedCounter
    /// The session is older than REJECT_AFTER_TIME (§6.2).
    case sessionExpired
    /// The counter reached REJECT_AFTER_MESSAGES (§6.2).
    case counterExhausted
    /// A cookie reply nobody asked for, or a response with no initiation in flight.
    case unexpected
    /// The caller's output buffer cannot hold the result.
    case bufferTooSmall
    /// The peer's public key gives an all-zero static DH: no handshake is possible.
    case invalidPeerKey
    /// The queue of packets waiting for a handshake was full; the oldest was dropped.
    case queueFull
    /// A queued packet dropped because no handshake completed (REKEY_ATTEMPT_TIME, key erasure).
    case handshakeFailed

    public var description: String {
        switch self {
        case .malformed: "malformed"
        case .invalidMAC1: "invalid MAC1"
        case .unknownReceiver: "unknown receiver index"
        case .unknownPeer: "unknown peer"
        case .authenticationFailed: "authentication failed"
        case .replayedInitiation: "replayed initiation"
        case .initiationFlood: "initiation flood"
        case .rateLimited: "rate limited"
        case .replayedCounter: "replayed counter"
        case .sessionExpired: "session expired"
        case .counterExhausted: "counter exhausted"
        case .unexpected: "unexpected message"
        case .bufferTooSmall: "buffer too small"
        case .invalidPeerKey: "invalid peer key"
        case .queueFull: "queue full"
        case .handshakeFailed: "handshake failed"
        }
    }
}

/// Counters for metrics. Fixed-size storage: counting never allocates.
public struct DropCounters: Equatable, Sendable {
    private var counts = [UInt64](repeating: 0, count: DropReason.allCases.count)

    public init() {}

    public subscript(reason: DropReason) -> UInt64 { counts[reason.rawValue] }

    public var total: UInt64 { counts.reduce(0, +) }

    mutating func count(_ reason: DropReason) { counts[reason.rawValue] &+= 1 }
}

public struct PeerStatistics: Equatable, Sendable {
    public var packetsSent: UInt64 = 0
    public var bytesSent: UInt64 = 0
    public var packetsReceived: UInt64 = 0
    public var bytesReceived: UInt64 = 0
    public var keepalivesSent: UInt64 = 0
    public var keepalivesReceived: UInt64 = 0
    public var handshakesInitiated: UInt64 = 0
    public var handshakesCompleted: UInt64 = 0
    public var cookieRepliesSent: UInt64 = 0
    public var dropped = DropCounters()

    public init() {}
}
