import FZCore
import FZTestSupport
import Testing

@testable import WireGuard

@Suite("Handshake rate limiter: a token bucket per source under load (whitepaper §5.3)")
struct RateLimiterTests {
    let a = IPAddress("10.0.0.1")!
    let b = IPAddress("10.0.0.2")!

    func allow(_ limiter: inout HandshakeRateLimiter, _ source: IPAddress, now: Timestamp) -> Bool {
        limiter.allow(source, now: now)
    }

    func allowedCount(_ limiter: inout HandshakeRateLimiter, _ source: IPAddress, _ attempts: Int, now: Timestamp) -> Int {
        var n = 0
        for _ in 0..<attempts where limiter.allow(source, now: now) { n += 1 }
        return n
    }

    @Test("a new source may send a burst of 5, then 20 per second")
    func burstThenRate() {
        var clock = ManualClock()
        var limiter = HandshakeRateLimiter()
        #expect(allowedCount(&limiter, a, 5, now: clock.now) == 5)
        #expect(!allow(&limiter, a, now: clock.now), "the burst is used up")
        clock.advance(by: .milliseconds(49))
        #expect(!allow(&limiter, a, now: clock.now), "a token takes 50 ms")
        clock.advance(by: .milliseconds(1))
        #expect(allow(&limiter, a, now: clock.now))
        #expect(!allow(&limiter, a, now: clock.now))
        // Over 10 s of one attempt every millisecond, about 20 per second get through.
        var passed = 0
        for _ in 0..<10_000 {
            clock.advance(by: .milliseconds(1))
            if limiter.allow(a, now: clock.now) { passed += 1 }
        }
        #expect(passed == 200)
        #expect(limiter.limited > 9_000)
    }

    @Test("the bucket refills up to the burst only")
    func refillIsCapped() {
        var clock = ManualClock()
        var limiter = HandshakeRateLimiter(idleTimeout: .seconds(3600))
        _ = limiter.allow(a, now: clock.now)
        clock.advance(seconds: 60)
        #expect(allowedCount(&limiter, a, 5, now: clock.now) == 5)
        #expect(!allow(&limiter, a, now: clock.now))
    }

    @Test("sources have their own buckets; IPv6 sources share one per /64; IPv4-mapped is IPv4")
    func keys() {
        let now = ManualClock().now
        var limiter = HandshakeRateLimiter(burst: 1)
        #expect(allow(&limiter, a, now: now))
        #expect(!allow(&limiter, a, now: now))
        #expect(allow(&limiter, b, now: now), "another source is not affected")
        #expect(allow(&limiter, IPAddress("2001:db8:1:2::1")!, now: now))
        #expect(!allow(&limiter, IPAddress("2001:db8:1:2:ffff::9")!, now: now), "same /64")
        #expect(allow(&limiter, IPAddress("2001:db8:1:3::1")!, now: now), "another /64")
        #expect(!allow(&limiter, IPAddress("::ffff:10.0.0.1")!, now: now), "the mapped address is 10.0.0.1")
        #expect(limiter.entryCount == 4)
    }

    @Test("memory is bounded: idle sources are forgotten, and a full table refuses new sources")
    func boundedMemory() {
        var clock = ManualClock()
        var limiter = HandshakeRateLimiter(maximumEntries: 100)
        for i in 0..<150 {
            let source = IPAddress.v4(IPv4Address(0x0A00_0000 | UInt32(i)))
            #expect(allow(&limiter, source, now: clock.now) == (i < 100))
        }
        #expect(limiter.entryCount == 100)
        #expect(limiter.refusedTableFull == 50)
        clock.advance(by: .milliseconds(999))
        #expect(!allow(&limiter, IPAddress("10.9.9.9")!, now: clock.now), "not idle for a second yet")
        clock.advance(by: .milliseconds(1))
        #expect(allow(&limiter, IPAddress("10.9.9.9")!, now: clock.now), "the sweep made room")
        #expect(limiter.entryCount == 1)
    }

    @Test("a clock that goes backwards neither crashes nor grants extra tokens")
    func backwardsClock() {
        var limiter = HandshakeRateLimiter(burst: 1)
        #expect(allow(&limiter, a, now: .seconds(10)))
        #expect(!allow(&limiter, a, now: .seconds(5)))
        #expect(!allow(&limiter, a, now: .seconds(5)))
    }
}
