import FZCore
import FZTestSupport
import Testing

@testable import Tunnel

@Suite struct HandshakeLoadMonitorTests {
    func record(_ monitor: inout HandshakeLoadMonitor, now: Timestamp) -> Bool { monitor.record(now: now) }

    @Test func more_than_threshold_in_the_window_is_load_and_it_is_held_for_a_second() {
        var clock = ManualClock()
        var monitor = HandshakeLoadMonitor(threshold: 4, window: .milliseconds(100), hold: .seconds(1))
        for _ in 0..<4 {
            #expect(!record(&monitor, now: clock.now))
            clock.advance(by: .milliseconds(10))
        }
        // The fifth within 100 ms (the first was 40 ms ago).
        #expect(record(&monitor, now: clock.now))
        let fifth = clock.now
        #expect(monitor.until == fifth + .seconds(1))
        clock.advance(by: .milliseconds(999))
        #expect(monitor.isUnderLoad(now: clock.now))
        clock.advance(by: .milliseconds(1))
        #expect(!monitor.isUnderLoad(now: clock.now), "one second after the last message that found it so")
    }

    @Test func a_steady_rate_at_the_threshold_is_not_load() {
        var clock = ManualClock()
        var monitor = HandshakeLoadMonitor(threshold: 4, window: .milliseconds(100), hold: .seconds(1))
        // 4 per 100 ms exactly, for 10 s: never more than 4 in any 100 ms.
        for _ in 0..<400 {
            #expect(!record(&monitor, now: clock.now))
            clock.advance(by: .milliseconds(25))
        }
    }

    @Test func a_sustained_flood_keeps_the_load_and_it_ends_a_second_after_the_flood() {
        var clock = ManualClock()
        var monitor = HandshakeLoadMonitor()  // more than 16 per 100 ms
        var firstLoaded: Timestamp?
        for _ in 0..<5_000 {  // 1000 per second for 5 s
            if record(&monitor, now: clock.now), firstLoaded == nil { firstLoaded = clock.now }
            clock.advance(by: .milliseconds(1))
        }
        #expect(firstLoaded == ManualClock().now + .milliseconds(16), "the 17th message within 100 ms")
        let end = clock.now
        #expect(monitor.isUnderLoad(now: end + .milliseconds(998)))
        #expect(!monitor.isUnderLoad(now: end + .milliseconds(1000)))
        // A slow trickle afterwards does not bring it back.
        clock.advance(seconds: 2)
        for _ in 0..<100 {
            #expect(!record(&monitor, now: clock.now))
            clock.advance(by: .milliseconds(50))
        }
    }

    @Test func defaults_are_documented_values() {
        let monitor = HandshakeLoadMonitor()
        #expect(monitor.threshold == 16)
        #expect(monitor.window == .milliseconds(100))
        #expect(monitor.hold == .seconds(1))
        #expect(!monitor.isUnderLoad(now: ManualClock().now))
    }
}
