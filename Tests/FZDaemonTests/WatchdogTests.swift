import FZCore
import FZDaemon
import FZTestSupport
import Synchronization
import Testing

/// Records what the watchdog would send to systemd.
final class Sent: Sendable {
    private let lines = Mutex<[String]>([])
    func record(_ s: String) { lines.withLock { $0.append(s) } }
    var count: Int { lines.withLock { $0.count } }
}

@Suite("The systemd watchdog is fed only while every loop is alive")
struct WatchdogTests {
    @Test("without WATCHDOG_USEC nothing is ever sent")
    func offWithoutInterval() {
        let sent = Sent()
        let w = Watchdog(loops: 1, interval: nil, notify: sent.record)
        w.beat(loop: 0, now: .seconds(1))
        #expect(!w.pingIfDue(now: .seconds(1)))
        #expect(sent.count == 0)
    }

    @Test("no ping before every loop has run once, then one per half interval")
    func pingsAtHalfInterval() {
        let sent = Sent()
        let w = Watchdog(loops: 2, interval: .seconds(10), notify: sent.record)
        var clock = ManualClock()
        clock.advance(seconds: 1)
        w.beat(loop: 0, now: clock.now)
        #expect(!w.pingIfDue(now: clock.now), "loop 1 has not run yet")
        w.beat(loop: 1, now: clock.now)
        #expect(w.pingIfDue(now: clock.now))
        for _ in 0..<20 {  // 20 s of housekeeping once a second: a ping every 5 s
            clock.advance(seconds: 1)
            w.beat(loop: 0, now: clock.now)
            w.beat(loop: 1, now: clock.now)
            w.pingIfDue(now: clock.now)
        }
        #expect(sent.count == 5)
    }

    @Test("a loop that stops beating stops the pings, and they resume when it beats again")
    func stuckLoopStopsPings() {
        let sent = Sent()
        let w = Watchdog(loops: 2, interval: .seconds(4), notify: sent.record)
        var clock = ManualClock()
        clock.advance(seconds: 1)
        w.beat(loop: 0, now: clock.now)
        w.beat(loop: 1, now: clock.now)
        #expect(w.pingIfDue(now: clock.now))
        for _ in 0..<10 {  // loop 1 is stuck for 10 s
            clock.advance(seconds: 1)
            w.beat(loop: 0, now: clock.now)
            w.pingIfDue(now: clock.now)
        }
        #expect(!w.loopsAlive(now: clock.now))
        let before = sent.count
        clock.advance(seconds: 1)
        w.beat(loop: 0, now: clock.now)
        #expect(!w.pingIfDue(now: clock.now))
        #expect(sent.count == before)
        // Freshness is max(interval, 3 s) = 4 s: pings went on for at most 4 s after the last beat.
        #expect(before <= 1 + 2)
        w.beat(loop: 1, now: clock.now)
        #expect(w.pingIfDue(now: clock.now))
    }

    @Test("loops beat at a quarter of the interval, at most once a second")
    func beatPeriod() {
        #expect(Watchdog(loops: 1, interval: .seconds(2)).beatPeriod == .milliseconds(500))
        #expect(Watchdog(loops: 1, interval: .seconds(30)).beatPeriod == .seconds(1))
        #expect(Watchdog(loops: 1, interval: nil).beatPeriod == .seconds(1))
    }

    @Test("a daemon without loops pings on the interval alone")
    func noLoops() {
        let sent = Sent()
        let w = Watchdog(loops: 0, interval: .seconds(2), notify: sent.record)
        #expect(w.pingIfDue(now: .seconds(1)))
        #expect(!w.pingIfDue(now: .seconds(1.5)))
        #expect(w.pingIfDue(now: .seconds(2)))
    }
}
