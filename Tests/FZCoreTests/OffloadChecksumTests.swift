import FZCore
import FZTestSupport
import Testing

@Suite("Offload: virtio header and Internet checksum")
struct OffloadChecksumTests {
    @Test("a virtio header is written little-endian field by field and reads back the same")
    func virtioLayout() {
        let header = VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv6 | VirtioNetHeader.gsoECN,
            headerLength: 0x0102, gsoSize: 0x0564, checksumStart: 0x0028, checksumOffset: 0x0010)
        var bytes = [UInt8](repeating: 0xAA, count: 12)
        bytes.withUnsafeMutableBytes { header.write(to: $0.baseAddress! + 1) }
        #expect(bytes == [0xAA, 0x01, 0x84, 0x02, 0x01, 0x64, 0x05, 0x28, 0x00, 0x10, 0x00, 0xAA])
        let decoded = bytes.withUnsafeBytes { VirtioNetHeader(UnsafeRawBufferPointer(rebasing: $0[1...])) }
        #expect(decoded == header)
        let handWritten: [UInt8] = [0x02, 0x01, 0x34, 0x00, 0x78, 0x05, 0x14, 0x00, 0x06, 0x00]
        #expect(handWritten.withUnsafeBytes { VirtioNetHeader($0) } == VirtioNetHeader(
            flags: VirtioNetHeader.dataValid, gsoType: VirtioNetHeader.gsoTCPv4, headerLength: 52, gsoSize: 1400,
            checksumStart: 20, checksumOffset: 6))
    }

    @Test("a virtio header needs ten bytes and none is all zero")
    func virtioShort() {
        let nine = [UInt8](repeating: 0, count: 9)
        #expect(nine.withUnsafeBytes { VirtioNetHeader($0) } == nil)
        var zero = [UInt8](repeating: 0xFF, count: 10)
        zero.withUnsafeMutableBytes { VirtioNetHeader.none.write(to: $0.baseAddress!) }
        #expect(zero == [UInt8](repeating: 0, count: 10))
    }

    @Test("the RFC 1071 example sums to 0xddf2")
    func rfc1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        #expect(bytes.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum($0)) } == 0xDDF2)
        // The same words split across calls, carried through `initial`.
        let split = bytes.withUnsafeBytes { raw in
            InternetChecksum.sum(
                UnsafeRawBufferPointer(rebasing: raw[4...]), initial: InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: raw[..<4])))
        }
        #expect(InternetChecksum.fold(split) == 0xDDF2)
    }

    @Test("an odd last byte is the high byte of a zero-padded word")
    func oddLength() {
        #expect([UInt8]([0xAB]).withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum($0)) } == 0xAB00)
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7, 0x01]
        #expect(bytes.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum($0)) } == 0xDEF2)
        #expect([UInt8]().withUnsafeBytes { InternetChecksum.sum($0, initial: 77) } == 77)
    }

    @Test("the word-at-a-time sum matches the byte-by-byte reference at every length and alignment")
    func matchesReference() {
        var rng = SplitMix64(seed: 1071)
        let data = (0..<300).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let ones = [UInt8](repeating: 0xFF, count: 300)
        for source in [data, ones] {
            source.withUnsafeBytes { raw in
                for start in 0..<9 {
                    for end in start...raw.count {
                        let got = InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: raw[start..<end])))
                        #expect(got == referenceSum(Array(source[start..<end])), "bytes \(start)..<\(end)")
                    }
                }
            }
        }
    }

    @Test("fold carries every overflow back in")
    func folding() {
        #expect(InternetChecksum.fold(0) == 0)
        #expect(InternetChecksum.fold(0xFFFF) == 0xFFFF)
        #expect(InternetChecksum.fold(0x1_0000) == 1)
        #expect(InternetChecksum.fold(0x1_FFFE) == 0xFFFF)
        #expect(InternetChecksum.fold(UInt64.max) == 0xFFFF)
        #expect(InternetChecksum.fold(0x0001_0002_0003_0004) == 10)
        let nearMax = [UInt8](repeating: 0xFF, count: 8)
        #expect(nearMax.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum($0, initial: .max)) } == 0xFFFF)
    }

    @Test("an IPv4 header including its correct checksum sums to 0xFFFF")
    func ipv4Header() {
        // 192.168.0.1 → 192.168.0.199, UDP, total length 115, DF: checksum 0xb861.
        var header: [UInt8] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xB8, 0x61, 0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0xC7,
        ]
        #expect(header.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum($0)) } == 0xFFFF)
        header[10] = 0
        header[11] = 0
        #expect(header.withUnsafeBytes { ~InternetChecksum.fold(InternetChecksum.sum($0)) } == 0xB861)
    }

    @Test("pseudo-header sums for IPv4 and IPv6 match the pseudo-header written out")
    func pseudoHeaders() {
        let v4 = TCPPacket(payload: patternPayload(100)).bytes
        let v6 = TCPPacket.v6(patternPayload(100)).bytes
        for (packet, length) in [(v4, 132), (v6, 132), (v6, 70_000)] {
            let got = packet.withUnsafeBytes { InternetChecksum.pseudoHeaderSum(ipPacket: $0, protocol: 6, length: length) }
            #expect(InternetChecksum.fold(got) == referenceSum(referencePseudoHeader(packet, proto: 6, length: length)))
        }
        // By hand: 192.0.2.1 → 198.51.100.7, TCP, 132 bytes.
        let byHand: UInt32 = 0xC000 + 0x0201 + 0xC633 + 0x6407 + 6 + 132
        let folded = UInt16((byHand & 0xFFFF) + (byHand >> 16))
        #expect(v4.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.pseudoHeaderSum(ipPacket: $0, protocol: 6, length: 132)) } == folded)
    }

    @Test("completing a partial TCP checksum gives a checksum that verifies")
    func completeTCP() {
        var spec = TCPPacket(payload: patternPayload(333))
        let full = spec.bytes
        spec.checksum = .partial
        var packet = spec.bytes
        #expect(packet != full)
        let ok = packet.withUnsafeMutableBytes { InternetChecksum.completePartialChecksum($0, start: 20, offset: 16) }
        #expect(ok)
        #expect(packet == full)
        #expect(transportChecksumValid(packet, proto: 6))

        var v6 = TCPPacket.v6(patternPayload(41))
        v6.checksum = .partial
        var packet6 = v6.bytes
        #expect(packet6.withUnsafeMutableBytes { InternetChecksum.completePartialChecksum($0, start: 40, offset: 16) })
        #expect(transportChecksumValid(packet6, proto: 6))
    }

    @Test("completing a partial UDP checksum writes 0xFFFF for a zero result")
    func completeUDP() {
        for v6 in [false, true] {
            let partialOf = { (p: [UInt8]) -> UInt16 in
                referenceSum(referencePseudoHeader(p, proto: 17, length: p.count - (v6 ? 40 : 20)))
            }
            // An ordinary payload.
            let template = udpPacket(v6: v6, payload: patternPayload(51), checksumField: 0)
            var packet = udpPacket(v6: v6, payload: patternPayload(51), checksumField: partialOf(template))
            let start = v6 ? 40 : 20
            #expect(packet.withUnsafeMutableBytes { InternetChecksum.completePartialChecksum($0, start: start, offset: 6) })
            #expect(transportChecksumValid(packet, proto: 17))
            #expect(be16(packet, start + 6) != 0)

            // A payload whose last word makes the sum fold to 0xFFFF, so the checksum computes to 0.
            var payload = patternPayload(50)
            payload[48] = 0
            payload[49] = 0
            let zeroed = udpPacket(v6: v6, payload: payload, checksumField: 0)
            let rest = referenceSum(referencePseudoHeader(zeroed, proto: 17, length: zeroed.count - start) + Array(zeroed[start...]))
            let word = ~rest
            payload[48] = UInt8(word >> 8)
            payload[49] = UInt8(word & 0xFF)
            let probe = udpPacket(v6: v6, payload: payload, checksumField: 0)
            var zero = udpPacket(v6: v6, payload: payload, checksumField: partialOf(probe))
            #expect(zero.withUnsafeMutableBytes { InternetChecksum.completePartialChecksum($0, start: start, offset: 6) })
            #expect(be16(zero, start + 6) == 0xFFFF)
            #expect(transportChecksumValid(zero, proto: 17))
        }
    }

    @Test("a partial checksum field outside the packet leaves it unchanged")
    func completeOutOfBounds() {
        let original = udpPacket(v6: false, payload: [1, 2, 3], checksumField: 0x1234)
        for (start, offset) in [(-1, 6), (20, -1), (31, 0), (30, 0), (29, 1), (20, 10), (Int.max, 6), (20, Int.max), (0, 30)] {
            var packet = original
            let ok = packet.withUnsafeMutableBytes { InternetChecksum.completePartialChecksum($0, start: start, offset: offset) }
            #expect(!ok, "start \(start) offset \(offset)")
            #expect(packet == original)
        }
        var last = original
        #expect(last.withUnsafeMutableBytes { InternetChecksum.completePartialChecksum($0, start: 29, offset: 0) })
    }
}
