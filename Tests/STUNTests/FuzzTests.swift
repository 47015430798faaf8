import FZTestSupport
import Testing

@testable import STUN

/// Property test standing in for the libFuzzer target: decoding never traps, and whatever
/// decodes re-encodes to something that decodes to the same attributes.
@Suite("Decoding arbitrary bytes")
struct FuzzTests {
    static let vectorNames = [
        "rfc5769-2.1-request", "rfc5769-2.2-ipv4-response", "rfc5769-2.3-ipv6-response",
        "rfc5769-2.4-long-term-request", "rfc8489-B.1-errata6268", "rfc8489-B.1-as-published",
    ]

    @Test("20,000 random and bit-flipped messages decode to a value or an error, never a crash")
    func neverCrashes() throws {
        var rng = SplitMix64(seed: 0x5354_554E)
        var seeds = try Self.vectorNames.map { try vector($0) }
        // A message full of every attribute kind, so flips reach each value parser.
        seeds.append(Message(type: MessageType(method: .allocate, messageClass: .successResponse),
                             transactionID: .random(),
                             attributes: AttributeRoundTripTests.all.filter { !$0.isTrailer && $0.type != AttributeType.data })
            .encode(integrity: MessageIntegrity(key: [1]), fingerprint: true))
        var decoded = 0
        for i in 0..<20_000 {
            var bytes: [UInt8]
            switch i % 4 {
            case 0:
                // Pure noise of any length.
                bytes = (0..<Int.random(in: 0...120, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1:
                // A valid header with a consistent length in front of noise, to reach the attribute loop.
                let body = (0..<(4 * Int.random(in: 0...30, using: &rng))).map { _ in UInt8.random(in: 0...255, using: &rng) }
                bytes = rawMessage(type: UInt16.random(in: 0...0x3FFF, using: &rng)) + body
                bytes.replaceSubrange(2..<4, with: be16(UInt16(body.count)))
            case 2:
                // A vector with a few bits flipped, length field included.
                bytes = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
                for _ in 0..<Int.random(in: 1...6, using: &rng) {
                    let bit = Int.random(in: 0..<(bytes.count * 8), using: &rng)
                    bytes[bit / 8] ^= 1 << UInt8(bit % 8)
                }
            default:
                // A vector with flipped attribute bytes and a length kept consistent, or truncated.
                bytes = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
                let index = Int.random(in: 20..<bytes.count, using: &rng)
                bytes[index] = UInt8.random(in: 0...255, using: &rng)
                if Bool.random(using: &rng) {
                    let keep = 20 + 4 * Int.random(in: 0...((bytes.count - 20) / 4), using: &rng)
                    bytes = Array(bytes[0..<keep])
                    bytes.replaceSubrange(2..<4, with: be16(UInt16(keep - 20)))
                }
            }
            do {
                let message = try Message.decode(bytes)
                decoded += 1
                _ = message.checkIntegrity(key: [1])
                _ = message.unknownComprehensionRequired
                let again = try Message.decode(message.encode())
                #expect(again.attributes == message.attributes.filter { !$0.isTrailer })
            } catch {
                // Any error is fine; it just must not be a trap.
                _ = error.description
            }
        }
        // The generators must actually reach successful decodes, not only header rejections.
        #expect(decoded > 1_000)
    }
}
