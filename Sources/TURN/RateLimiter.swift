import FZCore

/// Token buckets per source IP for replies sent before authentication.
///
/// A 401 answer is larger than the request that caused it, so an attacker spoofing a victim's
/// address could use the relay as an amplifier (facts.md). Each source gets `burst` replies and
/// then `perSecond`. The table is bounded: when full, idle buckets are dropped first and, if
/// none is idle, new sources are refused until some are.
public struct RateLimiter: Sendable {
    struct Bucket: Sendable {
        var tokens: Double
        var updated: Timestamp
    }

    public var perSecond: Double
    public var burst: Double
    public let capacity: Int
    private var buckets: [IPAddress: Bucket] = [:]

    public init(perSecond: Double = 10, burst: Double = 20, capacity: Int = 65_536) {
        self.perSecond = perSecond
        self.burst = burst
        self.capacity = capacity
    }

    public var trackedSources: Int { buckets.count }

    /// Takes a token for `source`; false when it has none left.
    public mutating func allow(_ source: IPAddress, now: Timestamp) -> Bool {
        if perSecond <= 0 && burst <= 0 { return true }  // disabled
        if var b = buckets[source] {
            refill(&b, now: now)
            guard b.tokens >= 1 else {
                buckets[source] = b
                return false
            }
            b.tokens -= 1
            buckets[source] = b
            return true
        }
        if buckets.count >= capacity {
            evictIdle(now: now)
            if buckets.count >= capacity { return false }
        }
        buckets[source] = Bucket(tokens: burst - 1, updated: now)
        return true
    }

    private func refill(_ b: inout Bucket, now: Timestamp) {
        guard now > b.updated else { return }
        let elapsed = Double((now - b.updated).nanosecondsClamped) / 1e9
        b.tokens = min(burst, b.tokens + elapsed * perSecond)
        b.updated = now
    }

    /// Drops buckets that have refilled completely: forgetting them changes nothing.
    public mutating func evictIdle(now: Timestamp) {
        let full = perSecond > 0 ? (burst / perSecond) : 0
        buckets = buckets.filter { _, b in Double((now - b.updated).nanosecondsClamped) / 1e9 < full }
    }
}
