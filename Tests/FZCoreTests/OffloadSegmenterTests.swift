import FZCore
import FZTestSupport
import Testing

@Suite("Offload: cutting TSO segments")
struct OffloadSegmenterTests {
    /// Checks `segments` against what cutting `spec` at `gso` must give.
    func expectSegments(_ segments: [[UInt8]], of spec: TCPPacket, gso: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let payload = spec.payload
        let ipLength = spec.ipHeaderLength
        let headers = ipLength + spec.tcpHeaderLength
        let original = spec.bytes
        #expect(segments.count == (payload.count + gso - 1) / gso, sourceLocation: sourceLocation)
        var joined: [UInt8] = []
        for (i, s) in segments.enumerated() {
            let expectedPayload = min(gso, payload.count - i * gso)
            #expect(s.count == headers + expectedPayload, "segment \(i)", sourceLocation: sourceLocation)
            guard s.count > headers else { continue }
            if spec.v6 {
                #expect(Int(be16(s, 4)) == s.count - 40, "segment \(i)", sourceLocation: sourceLocation)
                #expect(s[0..<4] == original[0..<4] && s[6..<40] == original[6..<40], "segment \(i)", sourceLocation: sourceLocation)
            } else {
                #expect(Int(be16(s, 2)) == s.count, "segment \(i)", sourceLocation: sourceLocation)
                #expect(be16(s, 4) == spec.identification &+ UInt16(truncatingIfNeeded: i), "segment \(i)", sourceLocation: sourceLocation)
                #expect(ipv4HeaderChecksumValid(s), "segment \(i)", sourceLocation: sourceLocation)
                #expect(s[0..<2] == original[0..<2] && s[6..<10] == original[6..<10] && s[12..<20] == original[12..<20],
                        "segment \(i)", sourceLocation: sourceLocation)
            }
            let tcp = ipLength
            #expect(be32(s, tcp + 4) == spec.sequence &+ UInt32(truncatingIfNeeded: i * gso), "segment \(i)", sourceLocation: sourceLocation)
            var flags = spec.flags
            if i != segments.count - 1 { flags &= ~(Flag.fin | Flag.psh) }
            if i != 0 { flags &= ~Flag.cwr }
            #expect(s[tcp + 13] == flags, "segment \(i)", sourceLocation: sourceLocation)
            #expect(s[tcp..<tcp + 4] == original[tcp..<tcp + 4] && s[tcp + 8..<tcp + 13] == original[tcp + 8..<tcp + 13]
                    && s[tcp + 14..<tcp + 16] == original[tcp + 14..<tcp + 16] && s[tcp + 18..<headers] == original[tcp + 18..<headers],
                    "segment \(i)", sourceLocation: sourceLocation)
            #expect(transportChecksumValid(s, proto: 6), "segment \(i)", sourceLocation: sourceLocation)
            joined += s[headers...]
        }
        let samePayload = joined == payload
        #expect(samePayload, "payloads concatenate to the original", sourceLocation: sourceLocation)
    }

    @Test("a 10 KB super packet is cut into valid segments with PSH and FIN only on the last",
          arguments: [false, true], [nil, 0] as [UInt16?])
    func cutsSuperPacket(v6: Bool, lengthField: UInt16?) throws {
        var spec = v6 ? TCPPacket.v6(patternPayload(10_000)) : TCPPacket(payload: patternPayload(10_000))
        spec.flags = Flag.ack | Flag.psh | Flag.fin
        spec.checksum = .partial
        spec.lengthField = lengthField
        let segments = try segment(spec.bytes, header: spec.gsoHeader(segment: 1380))
        #expect(segments.count == 8)
        expectSegments(segments, of: spec, gso: 1380)
    }

    @Test("sizes are reported before cutting")
    func sizes() throws {
        let spec = TCPPacket(payload: patternPayload(3000), checksum: .partial)
        try spec.bytes.withUnsafeBytes { raw in
            let s = try TCPSegmenter(header: spec.gsoHeader(segment: 1380), packet: raw)
            #expect(s.segmentCount == 3)
            #expect(s.maximumSegmentSize == 20 + 32 + 1380)
            #expect(s.segmentSize(2) == 20 + 32 + 240)
            #expect(s.ipHeaderLength == 20 && s.tcpHeaderLength == 32 && s.payloadLength == 3000 && !s.isIPv6)
        }
    }

    @Test("a header length from the kernel that is wrong is ignored")
    func ignoresHeaderLength() throws {
        let spec = TCPPacket(payload: patternPayload(4000), checksum: .partial)
        var header = spec.gsoHeader(segment: 1000)
        header.headerLength = 3
        expectSegments(try segment(spec.bytes, header: header), of: spec, gso: 1000)
    }

    @Test("sequence numbers and IPv4 identifications wrap around")
    func wraps() throws {
        var spec = TCPPacket(payload: patternPayload(5 * 1000 - 1), checksum: .partial)
        spec.sequence = 0xFFFF_F000
        spec.identification = 0xFFFE
        let segments = try segment(spec.bytes, header: spec.gsoHeader(segment: 1000))
        #expect(segments.map { be16($0, 4) } == [0xFFFE, 0xFFFF, 0, 1, 2])
        #expect(be32(segments[4], 24) == 0xFFFF_F000 &+ 4000)
        expectSegments(segments, of: spec, gso: 1000)
    }

    @Test("CWR stays on the first segment only")
    func cwr() throws {
        for v6 in [false, true] {
            var spec = v6 ? TCPPacket.v6(patternPayload(3500)) : TCPPacket(payload: patternPayload(3500))
            spec.flags = Flag.ack | Flag.cwr | Flag.psh
            spec.checksum = .partial
            var header = spec.gsoHeader(segment: 1200)
            header.gsoType |= VirtioNetHeader.gsoECN
            let segments = try segment(spec.bytes, header: header)
            #expect(segments.map { $0[spec.ipHeaderLength + 13] } == [Flag.ack | Flag.cwr, Flag.ack, Flag.ack | Flag.psh])
            expectSegments(segments, of: spec, gso: 1200)
        }
    }

    @Test("a payload shorter than gsoSize is one segment that keeps PSH and FIN")
    func single() throws {
        var spec = TCPPacket.v6(patternPayload(700))
        spec.flags = Flag.ack | Flag.psh | Flag.fin
        spec.checksum = .partial
        let header = spec.gsoHeader(segment: 1380)
        let segments = try segment(spec.bytes, header: header)
        #expect(segments.count == 1)
        #expect(segments[0].count == 40 + 32 + 700)
        expectSegments(segments, of: spec, gso: 1380)
        spec.checksum = .full
        #expect(segments[0] == spec.bytes)
    }

    @Test("a payload that is an exact multiple of gsoSize ends with a full segment")
    func exactMultiple() throws {
        let spec = TCPPacket(options: [], payload: patternPayload(4 * 1448), checksum: .partial)
        let segments = try segment(spec.bytes, header: spec.gsoHeader(segment: 1448))
        #expect(segments.map(\.count) == [1488, 1488, 1488, 1488])
        expectSegments(segments, of: spec, gso: 1448)
    }

    @Test("IPv4 options are copied into every segment")
    func ipv4Options() throws {
        let spec = TCPPacket(payload: patternPayload(2500), checksum: .partial)
        var packet = spec.bytes
        packet.insert(contentsOf: [1, 1, 1, 0], at: 20)  // NOP NOP NOP EOL
        packet[0] = 0x46
        var header = spec.gsoHeader(segment: 1000)
        header.checksumStart = 24
        let segments = try segment(packet, header: header)
        #expect(segments.count == 3)
        var joined: [UInt8] = []
        for (i, s) in segments.enumerated() {
            #expect(s[0] == 0x46 && s[20..<24] == [1, 1, 1, 0])
            #expect(Int(be16(s, 2)) == s.count && ipv4HeaderChecksumValid(s))
            #expect(be32(s, 28) == spec.sequence &+ UInt32(i * 1000))
            #expect(transportChecksumValid(s, proto: 6))
            joined += s[56...]
        }
        #expect(joined == spec.payload)
    }

    @Test("malformed super packets are rejected with the reason")
    func malformed() {
        let v4 = TCPPacket(payload: patternPayload(3000), checksum: .partial)
        let v6 = TCPPacket.v6(patternPayload(3000))
        let p4 = v4.bytes, p6 = v6.bytes
        let h4 = v4.gsoHeader(segment: 1000), h6 = v6.gsoHeader(segment: 1000)
        #expect(segmenterError(p4, h4) == nil)
        #expect(segmenterError(p6, h6) == nil)

        func with(_ h: VirtioNetHeader, _ change: (inout VirtioNetHeader) -> Void) -> VirtioNetHeader {
            var h = h
            change(&h)
            return h
        }
        func with(_ p: [UInt8], _ change: (inout [UInt8]) -> Void) -> [UInt8] {
            var p = p
            change(&p)
            return p
        }
        #expect(segmenterError(p4, with(h4) { $0.gsoType = VirtioNetHeader.gsoNone }) == .unsupportedGSOType(0))
        #expect(segmenterError(p4, with(h4) { $0.gsoType = VirtioNetHeader.gsoUDPL4 }) == .unsupportedGSOType(5))
        #expect(segmenterError(p4, with(h4) { $0.gsoType = VirtioNetHeader.gsoUDP }) == .unsupportedGSOType(3))
        #expect(segmenterError(p4, h6) == .ipVersionMismatch)
        #expect(segmenterError(p6, h4) == .ipVersionMismatch)
        #expect(segmenterError([], h4) == .truncated)
        #expect(segmenterError(Array(p4[..<19]), h4) == .truncated)
        #expect(segmenterError(Array(p6[..<39]), h6) == .truncated)
        #expect(segmenterError(with(p4) { $0[0] = 0x44 }, h4) == .invalidIPHeaderLength)
        #expect(segmenterError(with(p4) { $0[9] = 17 }, h4) == .notTCP)
        #expect(segmenterError(with(p6) { $0[6] = 0 }, h6) == .notTCP)
        #expect(segmenterError(p4, with(h4) { $0.checksumStart = 40 }) == .checksumStartMismatch)
        #expect(segmenterError(p6, with(h6) { $0.checksumStart = 20 }) == .checksumStartMismatch)
        #expect(segmenterError(p4, with(h4) { $0.checksumOffset = 6 }) == .checksumOffsetMismatch)
        #expect(segmenterError(Array(p4[..<35]), h4) == .truncated)
        #expect(segmenterError(Array(p6[..<70]), h6) == .truncated)
        #expect(segmenterError(with(p4) { $0[32] = 0x40 }, h4) == .invalidTCPDataOffset)
        #expect(segmenterError(with(p6) { $0[52] = 0 }, h6) == .invalidTCPDataOffset)
        #expect(segmenterError(with(Array(p4[..<70])) { $0[32] = 0xF0 }, h4) == .truncated)
        #expect(segmenterError(p4, with(h4) { $0.gsoSize = 0 }) == .zeroSegmentSize)
        #expect(segmenterError(Array(p4[..<52]), h4) == .emptyPayload)
        #expect(segmenterError(Array(p6[..<72]), h6) == .emptyPayload)
        let huge4 = TCPPacket(payload: patternPayload(70_000), checksum: .partial)
        let huge6 = TCPPacket.v6(patternPayload(70_000))
        #expect(segmenterError(huge4.bytes, huge4.gsoHeader(segment: 65_535)) == .segmentTooLarge)
        #expect(segmenterError(huge6.bytes, huge6.gsoHeader(segment: 65_535)) == .segmentTooLarge)
        #expect(segmenterError(huge6.bytes, huge6.gsoHeader(segment: 65_535 - 32)) == nil)
        #expect(segmenterError(huge4.bytes, huge4.gsoHeader(segment: 65_535 - 52)) == nil)
    }

    @Test("random and damaged input never crashes the segmenter, and whatever it cuts verifies")
    func fuzz() {
        var rng = SplitMix64(seed: 0xF22)
        let bases = [
            TCPPacket(payload: patternPayload(4000), checksum: .partial),
            TCPPacket.v6(patternPayload(2345)),
            TCPPacket(options: [], payload: patternPayload(100), checksum: .partial),
        ].map { ($0.bytes, $0.gsoHeader(segment: 1)) }
        var accepted = 0
        for iteration in 0..<4000 {
            var packet: [UInt8]
            var header: VirtioNetHeader
            if iteration % 4 == 0 {
                packet = (0..<Int.random(in: 0...160, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if let b = packet.first { packet[0] = b & 0x0F | (Bool.random(using: &rng) ? 0x40 : 0x60) }
                header = VirtioNetHeader(
                    flags: 1, gsoType: [1, 4, 0x81, 0x84, 3, 0].randomElement(using: &rng)!,
                    headerLength: .random(in: 0...100, using: &rng), gsoSize: .random(in: 0...200, using: &rng),
                    checksumStart: [20, 24, 40, 60].randomElement(using: &rng)!, checksumOffset: 16)
            } else {
                let base = bases.randomElement(using: &rng)!
                packet = base.0
                header = base.1
                header.gsoSize = [97, 536, 1380, 65535].randomElement(using: &rng)!
                for _ in 0..<Int.random(in: 0...3, using: &rng) {
                    packet[Int.random(in: 0..<min(packet.count, 80), using: &rng)] = .random(in: 0...255, using: &rng)
                }
                if Bool.random(using: &rng) { packet.removeLast(Int.random(in: 0...packet.count, using: &rng)) }
                if Int.random(in: 0..<8, using: &rng) == 0 { header.checksumStart = .random(in: 0...80, using: &rng) }
            }
            packet.withUnsafeBytes { raw in
                guard let s = try? TCPSegmenter(header: header, packet: raw) else { return }
                accepted += 1
                var out = [UInt8](repeating: 0, count: s.maximumSegmentSize)
                for i in 0..<s.segmentCount {
                    let n = out.withUnsafeMutableBytes { s.writeSegment(i, into: $0) }
                    #expect(n == s.segmentSize(i) && n <= s.maximumSegmentSize)
                    let seg = Array(out[..<n])
                    #expect(transportChecksumValid(seg, proto: 6))
                    if !s.isIPv6 { #expect(ipv4HeaderChecksumValid(seg)) }
                }
            }
        }
        #expect(accepted > 500)
    }
}
