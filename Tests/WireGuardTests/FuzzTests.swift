import FZCore
import FZTestSupport
import Testing

@testable import WireGuard

/// Property test standing in for a fuzzer: whatever arrives, decapsulate returns a value, counts
/// its drops, and never turns bytes that failed authentication into a packet or a handshake.
@Suite("Decapsulating arbitrary datagrams")
struct FuzzTests {
    @Test("10,000 random and mutated datagrams never crash decapsulate and never yield a packet or a session")
    func neverCrashes() throws {
        var rng = SplitMix64(seed: 0x5747_4655_5A5A)
        // Seeds: one of each message type, all already delivered once so an exact copy is a replay.
        var sim = Simulator()
        sim.underLoad = [.bob]
        sim.send(from: .alice, ipv4Packet(size: 60))
        sim.deliverAll()
        sim.underLoad = []
        sim.advance(seconds: 6)
        sim.send(from: .alice, ipv4Packet(size: 200))
        sim.send(from: .bob, [])
        sim.deliverAll()
        let seeds = sim.sent.map(\.bytes)
        #expect(Set(seeds.map { $0[0] }) == [1, 2, 3, 4])

        var device = Device(privateKey: sim.bobKey, wallClock: WallClock(anchor: wallClockStart, at: sim.now))
        device.addPeer(PeerConfiguration(publicKey: sim.aliceKey.publicKey))
        var scratch = [UInt8](repeating: 0, count: 2048)
        for (k, seed) in seeds.enumerated() {
            _ = device.decapsulate(seed, from: sim.aliceAddress, into: &scratch, now: sim.now + .seconds(Int64(k)))
        }
        // Later than any seed, so the initiation flood limit is not what rejects replays.
        let start = sim.now + .seconds(100)

        let bobDropsBefore = sim.bob.stats.dropped.total
        var bobDrops: UInt64 = 0
        var outcomes: [String: Int] = [:]
        for i in 0..<10_000 {
            let input = mutate(seeds, strategy: i % 5, rng: &rng)
            let underLoad = i % 7 == 0
            var out = [UInt8](repeating: 0, count: Int.random(in: 0...300, using: &rng) == 0 ? 16 : 2048)
            let now = start + .milliseconds(Int64(i))
            for target in 0..<3 {
                let result: DecapsulateResult
                switch target {
                case 0:
                    result = sim.bob.decapsulate(input, from: sim.aliceAddress, into: &out, now: now, underLoad: underLoad)
                    if case .drop = result { bobDrops += 1 }
                case 1:
                    result = sim.alice.decapsulate(input, from: sim.bobAddress, into: &out, now: now, underLoad: underLoad)
                default:
                    device.underLoad = underLoad
                    result = device.decapsulate(input, from: sim.aliceAddress, into: &out, now: now).result
                }
                switch result {
                case .drop(let reason): outcomes["\(reason)", default: 0] += 1
                case .cookieReply: #expect(underLoad, "cookie replies only under load")
                default: Issue.record("input \(i) to target \(target) was accepted: \(result) \(input.hexString)")
                }
            }
        }
        #expect(sim.bob.stats.dropped.total - bobDropsBefore == bobDrops, "every drop is counted")
        #expect(outcomes.count >= 6, "the inputs reached many different checks: \(outcomes)")
    }

    private func mutate(_ seeds: [[UInt8]], strategy: Int, rng: inout SplitMix64) -> [UInt8] {
        var bytes = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
        switch strategy {
        case 0:
            // Noise of any length, often with a plausible header so it gets past the type check.
            bytes = (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if bytes.count >= 4, Bool.random(using: &rng) {
                bytes[0] = UInt8.random(in: 0...5, using: &rng)
                bytes[1] = 0
                bytes[2] = 0
                bytes[3] = 0
            }
        case 1:
            // A few flipped bits.
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let bit = Int.random(in: 0..<(bytes.count * 8), using: &rng)
                bytes[bit / 8] ^= 1 << UInt8(bit % 8)
            }
        case 2:
            // Truncated or extended.
            if Bool.random(using: &rng) {
                bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            } else {
                bytes += (0..<Int.random(in: 1...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
        case 3:
            // One byte replaced by a different value, outside the header.
            let index = Int.random(in: min(4, bytes.count - 1)..<bytes.count, using: &rng)
            bytes[index] ^= UInt8.random(in: 1...255, using: &rng)
        default:
            // A transport header pointing at a live session, with garbage after it.
            let live = seeds.first { $0[0] == 4 }!
            bytes = Array(live[0..<8]) + (0..<Int.random(in: 8...120, using: &rng)).map { _ in
                UInt8.random(in: 0...255, using: &rng)
            }
        }
        return bytes
    }
}
