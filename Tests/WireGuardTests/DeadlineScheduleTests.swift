import FZCore
import FZTestSupport
import Testing

@testable import WireGuard

@Suite("Device timer schedule: the next deadline of many peers without a scan")
struct DeadlineScheduleTests {
    /// The deadline a scan of every peer finds: what the schedule must never be later than.
    func scannedDeadline(_ h: DeviceHarness) -> Timestamp {
        h.ids.reduce(Timestamp.distantFuture) { min($0, h.device[$1].nextDeadline) }
    }

    @Test("seeded random traffic and timers: no due peer is ever missed, and none is run early")
    func randomTraffic() {
        for seed in [1, 7, 42] as [UInt64] {
            var random = SplitMix64(seed: seed)
            var h = DeviceHarness(clients: 40)
            var timerRuns = 0
            for _ in 0..<600 {
                switch random.next() % 4 {
                case 0, 1:
                    let i = Int(random.next() % UInt64(h.clients.count))
                    _ = h.clientSends(i, ipv4Packet(size: 40))
                case 2:
                    h.clock.advance(by: .milliseconds(Int64(random.next() % 4_000)))
                default:
                    let i = Int(random.next() % UInt64(h.ids.count))
                    var buffer = [UInt8](repeating: 0, count: 2048)
                    _ = h.device[h.ids[i]].encapsulate(ipv4Packet(size: 60), into: &buffer, now: h.clock.now)
                }
                let scanned = scannedDeadline(h)
                #expect(h.device.nextDeadline <= scanned, "seed \(seed): the schedule is later than a scan")
                if h.device.nextDeadline <= h.clock.now {
                    _ = h.device.handleTimeout(now: h.clock.now)
                    timerRuns += 1
                    for id in h.ids {
                        #expect(h.device[id].nextDeadline > h.clock.now, "seed \(seed): \(id) was due and not run")
                    }
                }
            }
            #expect(timerRuns > 10, "seed \(seed): the timers ran (\(timerRuns))")
            #expect(h.device.schedule.heap.count <= 4 * h.ids.count + 64, "seed \(seed): stale entries are bounded")
        }
    }

    @Test("idle peers cost nothing: with 500 of them configured, the schedule holds no entry")
    func idlePeers() {
        var h = DeviceHarness(clients: 500)
        #expect(h.device.nextDeadline == .distantFuture)
        #expect(h.device.schedule.heap.isEmpty)
        _ = h.clientSends(3, ipv4Packet(size: 40))
        #expect(h.device.nextDeadline == scannedDeadline(h))
        #expect(h.device.nextDeadline < .distantFuture, "the busy one has timers")
        h.device.removePeer(h.ids[3])
        // Its entry stays until it comes due (lazy deletion), and then is skipped.
        h.clock.advance(by: .seconds(3_600))
        #expect(h.device.handleTimeout(now: h.clock.now).isEmpty, "a removed peer's entry is skipped")
        #expect(h.device.nextDeadline == .distantFuture)
        #expect(h.device.schedule.heap.isEmpty)
    }
}
