import FZCore

/// A token bucket per source address for handshake messages that a responder under load would
/// otherwise answer with Curve25519 work (whitepaper §5.3; wireguard-go `ratelimiter/`, Linux
/// `ratelimiter.c`): each source may send `perSecond` of them, in bursts of up to `burst`.
///
/// Sources are keyed by IPv4 address, or IPv6 /64 prefix (one host usually owns a whole /64).
/// It is only consulted after a valid MAC2, that is for sources that proved they receive at their
/// address, so a forged-source flood cannot fill it nor lock a legitimate peer out.
///
/// Memory is bounded: an entry idle for `idleTimeout` is forgotten (swept at most once per
/// `idleTimeout`), and at `maximumEntries` a new source is refused until a sweep frees room,
/// as the kernel does. Pure: `now` is a parameter; no clock, no allocation but the table.
public struct HandshakeRateLimiter: Sendable {
    public static let defaultPerSecond = 20
    public static let defaultBurst = 5
    public static let defaultMaximumEntries = 65_536

    struct Key: Hashable, Sendable {
        var isV6: Bool
        var bits: UInt64
    }

    private struct Entry: Sendable {
        /// Nanoseconds of credit; one message costs `cost`.
        var tokens: UInt64
        var last: UInt64
    }

    public let perSecond: Int
    public let burst: Int
    public let maximumEntries: Int
    public let idleTimeout: Duration
    private let cost: UInt64
    private let capacity: UInt64
    private let idleNanoseconds: UInt64
    private var table: [Key: Entry] = [:]
    private var lastSweep: UInt64 = 0

    public private(set) var allowed: UInt64 = 0
    public private(set) var limited: UInt64 = 0
    /// Refusals because the table was full (also counted in `limited`).
    public private(set) var refusedTableFull: UInt64 = 0

    public init(perSecond: Int = defaultPerSecond, burst: Int = defaultBurst,
                maximumEntries: Int = defaultMaximumEntries, idleTimeout: Duration = .seconds(1)) {
        precondition(perSecond > 0 && burst > 0 && maximumEntries > 0, "rate limiter parameters must be positive")
        self.perSecond = perSecond
        self.burst = burst
        self.maximumEntries = maximumEntries
        self.idleTimeout = idleTimeout
        cost = 1_000_000_000 / UInt64(perSecond)
        capacity = cost * UInt64(burst)
        idleNanoseconds = UInt64(max(0, idleTimeout.nanosecondsClamped))
    }

    /// Sources currently remembered.
    public var entryCount: Int { table.count }

    /// True if a handshake message from `source` may be processed now; takes one token.
    public mutating func allow(_ source: IPAddress, now: Timestamp) -> Bool {
        let t = now.nanoseconds
        if t &- lastSweep >= idleNanoseconds || t < lastSweep { sweep(now: t) }
        let key = Self.key(source)
        if var entry = table[key] {
            let elapsed = t >= entry.last ? t - entry.last : 0
            entry.tokens = min(capacity, entry.tokens &+ min(elapsed, capacity))
            entry.last = max(entry.last, t)
            let ok = entry.tokens >= cost
            if ok { entry.tokens -= cost }
            table[key] = entry
            return count(ok)
        }
        if table.count >= maximumEntries {
            refusedTableFull &+= 1
            return count(false)
        }
        // A new source starts with a full bucket, minus this message.
        table[key] = Entry(tokens: capacity - cost, last: t)
        return count(true)
    }

    /// Forgets every source idle for at least `idleTimeout` (a full bucket is the same as none).
    public mutating func sweep(now: Timestamp) { sweep(now: now.nanoseconds) }

    private mutating func sweep(now t: UInt64) {
        lastSweep = t
        guard !table.isEmpty else { return }
        table = table.filter { t < $0.value.last || t - $0.value.last < idleNanoseconds }
    }

    @inline(__always)
    private mutating func count(_ ok: Bool) -> Bool {
        if ok { allowed &+= 1 } else { limited &+= 1 }
        return ok
    }

    static func key(_ address: IPAddress) -> Key {
        switch address {
        case .v4(let a):
            return Key(isV6: false, bits: UInt64(a.value))
        case .v6(let a):
            // IPv4-mapped (::ffff:a.b.c.d) is the IPv4 source it stands for.
            if a.high == 0, a.low >> 32 == 0xFFFF { return Key(isV6: false, bits: a.low & 0xFFFF_FFFF) }
            return Key(isV6: true, bits: a.high)
        }
    }
}
