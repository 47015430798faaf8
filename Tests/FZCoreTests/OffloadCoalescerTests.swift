import FZCore
import FZTestSupport
import Testing

@Suite("Offload: coalescing received TCP segments")
struct OffloadCoalescerTests {
    /// Cuts `spec` at `gso` with the segmenter, as a peer's TSO would have.
    func cut(_ spec: TCPPacket, gso: Int) throws -> [[UInt8]] {
        var s = spec
        s.checksum = .partial
        return try segment(s.bytes, header: s.gsoHeader(segment: gso))
    }

    /// Segments of one flow built one by one: consecutive sequence numbers and IPv4 identifications,
    /// PSH on the ones listed.
    func flow(_ base: TCPPacket, sizes: [Int], push: Set<Int> = []) -> [TCPPacket] {
        var sequence = base.sequence
        return sizes.enumerated().map { i, size in
            var p = base
            p.sequence = sequence
            p.identification = base.identification &+ UInt16(i)
            p.payload = patternPayload(size, seed: i)
            if push.contains(i) { p.flags |= Flag.psh }
            sequence &+= UInt32(size)
            return p
        }
    }

    func alone(_ packet: [UInt8]) -> Emitted { Emitted(header: .none, bytes: packet) }

    /// Checks that `other`, arriving after the first two of the four segments `s`, ends their run
    /// and passes through unchanged, and that the last two form a run of their own.
    func expectPassesThrough(_ other: [UInt8], between s: [[UInt8]], sourceLocation: SourceLocation = #_sourceLocation) {
        var coalescer = TCPCoalescer()
        let out = coalesce([s[0], s[1], other, s[2], s[3]], with: &coalescer)
        #expect(out.count == 3, sourceLocation: sourceLocation)
        expectMerged(out.first, of: [s[0], s[1]], sourceLocation: sourceLocation)
        #expect(out.count == 3 && out[1] == alone(other), sourceLocation: sourceLocation)
        expectMerged(out.last, of: [s[2], s[3]], sourceLocation: sourceLocation)
    }

    /// Checks that `e` is `segments` merged, and that cutting it again gives exactly them back.
    func expectMerged(_ e: Emitted?, of segments: [[UInt8]], sourceLocation: SourceLocation = #_sourceLocation) {
        guard let e, let first = segments.first else {
            Issue.record("nothing emitted", sourceLocation: sourceLocation)
            return
        }
        let v6 = first[0] >> 4 == 6
        let ip = v6 ? 40 : 20
        let headers = ip + Int(first[ip + 12] >> 4) * 4
        let payloads = segments.map { Array($0[headers...]) }
        let expectedHeader = VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum, gsoType: v6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
            headerLength: UInt16(headers), gsoSize: UInt16(payloads[0].count), checksumStart: UInt16(ip), checksumOffset: 16)
        #expect(e.header == expectedHeader, sourceLocation: sourceLocation)
        #expect(e.bytes.count == headers + payloads.map(\.count).reduce(0, +), sourceLocation: sourceLocation)
        guard e.bytes.count > headers else { return }
        let samePayload = Array(e.bytes[headers...]) == Array(payloads.joined())
        #expect(samePayload, "merged payload", sourceLocation: sourceLocation)
        if v6 {
            #expect(Int(be16(e.bytes, 4)) == e.bytes.count - 40, sourceLocation: sourceLocation)
            #expect(e.bytes[0..<4] == first[0..<4] && e.bytes[6..<40] == first[6..<40], sourceLocation: sourceLocation)
        } else {
            #expect(Int(be16(e.bytes, 2)) == e.bytes.count, sourceLocation: sourceLocation)
            #expect(ipv4HeaderChecksumValid(e.bytes), sourceLocation: sourceLocation)
            #expect(e.bytes[0..<2] == first[0..<2] && e.bytes[4..<10] == first[4..<10] && e.bytes[12..<20] == first[12..<20],
                    sourceLocation: sourceLocation)
        }
        let lastPush = segments.last![ip + 13] & Flag.psh
        #expect(e.bytes[ip + 13] == first[ip + 13] | lastPush, sourceLocation: sourceLocation)
        #expect(e.bytes[ip..<ip + 13] == first[ip..<ip + 13] && e.bytes[ip + 14..<ip + 16] == first[ip + 14..<ip + 16]
                && e.bytes[ip + 18..<headers] == first[ip + 18..<headers], sourceLocation: sourceLocation)
        let partial = referenceSum(referencePseudoHeader(e.bytes, proto: 6, length: e.bytes.count - ip))
        #expect(be16(e.bytes, ip + 16) == partial, "CHECKSUM_PARTIAL holds the folded pseudo-header sum", sourceLocation: sourceLocation)
        var completed = e.bytes
        #expect(completed.withUnsafeMutableBytes { InternetChecksum.completePartialChecksum($0, start: ip, offset: 16) })
        let completes = transportChecksumValid(completed, proto: 6)
        #expect(completes, "completed checksum verifies", sourceLocation: sourceLocation)
        let cutsBack = (try? segment(e.bytes, header: e.header)) == segments
        #expect(cutsBack, "cutting the merge again", sourceLocation: sourceLocation)
    }

    @Test("segments cut by the segmenter coalesce back into the super packet they came from", arguments: [false, true])
    func roundTrip(v6: Bool) throws {
        var spec = v6 ? TCPPacket.v6(patternPayload(10_000)) : TCPPacket(payload: patternPayload(10_000))
        spec.flags = Flag.ack | Flag.psh
        let segments = try cut(spec, gso: 1380)
        #expect(segments.count == 8)
        var coalescer = TCPCoalescer()
        let out = coalesce(segments, with: &coalescer)
        #expect(out.count == 1)
        expectMerged(out.first, of: segments)
        spec.checksum = .partial
        #expect(out.first == Emitted(header: spec.gsoHeader(segment: 1380), bytes: spec.bytes))
        #expect(coalescer.coalescedPackets == 7)
        #expect(coalescer.superPackets == 1)
    }

    @Test("a FIN on the last segment keeps it out of the run")
    func finLast() throws {
        var spec = TCPPacket(payload: patternPayload(5000))
        spec.flags = Flag.ack | Flag.psh | Flag.fin
        let s = try cut(spec, gso: 1380)
        var coalescer = TCPCoalescer()
        let out = coalesce(s, with: &coalescer)
        #expect(out.count == 2)
        expectMerged(out.first, of: Array(s[0..<3]))
        #expect(out.last == alone(s[3]))
    }

    @Test("interleaved flows end each other's runs; consecutive ones coalesce")
    func interleaved() throws {
        var a = TCPPacket(payload: patternPayload(3000, seed: 1))
        a.sourcePort = 1000
        var b = TCPPacket(payload: patternPayload(3000, seed: 2))
        b.sourcePort = 2000
        b.sequence = 77
        let sa = try cut(a, gso: 1000), sb = try cut(b, gso: 1000)
        var coalescer = TCPCoalescer()
        let mixed = [sa[0], sb[0], sa[1], sb[1], sa[2], sb[2]]
        #expect(coalesce(mixed, with: &coalescer) == mixed.map(alone))
        #expect(coalescer.coalescedPackets == 0 && coalescer.superPackets == 0)
        let out = coalesce(sa + sb, with: &coalescer)
        #expect(out.count == 2)
        expectMerged(out.first, of: sa)
        expectMerged(out.last, of: sb)
        #expect(coalescer.coalescedPackets == 4 && coalescer.superPackets == 2)
    }

    @Test("a packet that is not TCP ends the run and passes through unchanged")
    func notTCPInTheMiddle() throws {
        let s = try cut(TCPPacket(payload: patternPayload(4000)), gso: 1000)
        for other in [udpPacket(v6: false, payload: [1, 2, 3], checksumField: 0), [], [0x45], [0x60, 0, 0]] {
            expectPassesThrough(other, between: s)
        }
    }

    @Test("a segment with a bad checksum is passed on alone for the kernel to drop")
    func badChecksum() throws {
        let s = try cut(TCPPacket.v6(patternPayload(4000)), gso: 1000)
        var bad = s[2]
        bad[500] ^= 0x40
        var coalescer = TCPCoalescer()
        var out = coalesce([s[0], s[1], bad, s[3]], with: &coalescer)
        #expect(out.count == 3)
        expectMerged(out.first, of: [s[0], s[1]])
        #expect(Array(out.dropFirst()) == [alone(bad), alone(s[3])])

        var badFirst = s[0]
        badFirst[40 + 16] ^= 1
        out = coalesce([badFirst, s[1], s[2]], with: &coalescer)
        #expect(out.count == 2)
        #expect(out.first == alone(badFirst))
        expectMerged(out.last, of: [s[1], s[2]])

        // IPv4: an identification changed without the header checksum (the TCP checksum does not
        // cover it, and runs do not compare it), so only the header checksum can catch it.
        let s4 = try cut(TCPPacket(payload: patternPayload(3000)), gso: 1000)
        var badHeader = s4[1]
        badHeader[5] ^= 0x10
        out = coalesce([s4[0], badHeader, s4[2]], with: &coalescer)
        #expect(out == [alone(s4[0]), alone(badHeader), alone(s4[2])])
    }

    @Test("a gap or a repeat in sequence numbers starts a new run")
    func sequenceGap() throws {
        let s = try cut(TCPPacket(payload: patternPayload(5000)), gso: 1000)
        var coalescer = TCPCoalescer()
        var out = coalesce([s[0], s[1], s[3], s[4]], with: &coalescer)
        #expect(out.count == 2)
        expectMerged(out.first, of: [s[0], s[1]])
        expectMerged(out.last, of: [s[3], s[4]])
        out = coalesce([s[0], s[1], s[1]], with: &coalescer)
        #expect(out.count == 2)
        expectMerged(out.first, of: [s[0], s[1]])
        #expect(out.last == alone(s[1]))
    }

    @Test("a short segment ends a run and a longer one cannot join")
    func shortSegments() {
        let base = TCPPacket(payload: [])
        var coalescer = TCPCoalescer()
        var s = flow(base, sizes: [1380, 500, 1380]).map(\.bytes)
        var out = coalesce(s, with: &coalescer)
        #expect(out.count == 2)
        expectMerged(out.first, of: [s[0], s[1]])
        #expect(out.last == alone(s[2]))

        s = flow(base, sizes: [500, 1380, 1380]).map(\.bytes)
        out = coalesce(s, with: &coalescer)
        #expect(out.count == 2)
        #expect(out.first == alone(s[0]))
        expectMerged(out.last, of: [s[1], s[2]])

        s = flow(base, sizes: [1380, 1380, 1380, 1]).map(\.bytes)
        out = coalesce(s, with: &coalescer)
        #expect(out.count == 1)
        expectMerged(out.first, of: s)
    }

    @Test("PSH ends a run and is set on the merged header")
    func pushEndsRun() {
        for base in [TCPPacket(payload: []), TCPPacket.v6()] {
            let s = flow(base, sizes: [1000, 1000, 1000, 1000, 1000], push: [2]).map(\.bytes)
            var coalescer = TCPCoalescer()
            let out = coalesce(s, with: &coalescer)
            #expect(out.count == 2)
            expectMerged(out.first, of: Array(s[0..<3]))
            expectMerged(out.last, of: Array(s[3...]))
            #expect(out.first?.bytes[base.ipHeaderLength + 13] == Flag.ack | Flag.psh)
            #expect(out.last?.bytes[base.ipHeaderLength + 13] == Flag.ack)
        }
        // A run that starts with PSH is one segment long.
        let s = flow(TCPPacket(payload: []), sizes: [1000, 1000, 1000], push: [0]).map(\.bytes)
        var coalescer = TCPCoalescer()
        let out = coalesce(s, with: &coalescer)
        #expect(out.count == 2)
        #expect(out.first == alone(s[0]))
        expectMerged(out.last, of: [s[1], s[2]])
    }

    @Test("a run stops at the capacity and at the 16-bit IP length", arguments: [false, true])
    func capacity(v6: Bool) throws {
        let ip = v6 ? 40 : 20
        let spec = v6 ? TCPPacket.v6(patternPayload(5000)) : TCPPacket(payload: patternPayload(5000))
        let s = try cut(spec, gso: 1000)
        var small = TCPCoalescer(capacity: ip + 32 + 3 * 1000)
        var out = coalesce(s, with: &small)
        #expect(out.count == 2)
        expectMerged(out.first, of: Array(s[0..<3]))
        expectMerged(out.last, of: Array(s[3...]))

        var tiny = TCPCoalescer(capacity: 1000)
        out = coalesce([s[0], s[1]], with: &tiny)
        #expect(out == [alone(s[0]), alone(s[1])])

        let big = try cut(v6 ? TCPPacket.v6(patternPayload(70_000)) : TCPPacket(payload: patternPayload(70_000)), gso: 1000)
        var full = TCPCoalescer()
        out = coalesce(big, with: &full)
        #expect(out.count == 2)
        expectMerged(out.first, of: Array(big[0..<65]))
        expectMerged(out.last, of: Array(big[65...]))
        #expect(out.first.map { $0.bytes.count - ip } == 32 + 65_000)
    }

    @Test("a run of one segment is passed on unchanged without offload")
    func singleSegment() throws {
        let s = try cut(TCPPacket.v6(patternPayload(1380)), gso: 1380)
        var coalescer = TCPCoalescer()
        var out: [Emitted] = []
        s[0].withUnsafeBytes { raw in coalescer.push(raw) { h, b in out.append(Emitted(header: h, bytes: Array(b))) } }
        #expect(out.isEmpty, "held until flushed")
        coalescer.flush { h, b in out.append(Emitted(header: h, bytes: Array(b))) }
        #expect(out == [alone(s[0])])
        coalescer.flush { h, b in out.append(Emitted(header: h, bytes: Array(b))) }
        #expect(out.count == 1, "a second flush has nothing to emit")
        #expect(coalescer.coalescedPackets == 0 && coalescer.superPackets == 0)
    }

    @Test("padding after the IP packet is left out")
    func padding() {
        for base in [TCPPacket(payload: [], padding: 7), TCPPacket.v6()] {
            var padded = base
            padded.padding = 9
            let specs = flow(padded, sizes: [1000, 1000, 600])
            var coalescer = TCPCoalescer()
            let out = coalesce(specs.map(\.bytes), with: &coalescer)
            #expect(out.count == 1)
            expectMerged(out.first, of: specs.map { var p = $0; p.padding = 0; return p.bytes })
            let one = coalesce([specs[0].bytes], with: &coalescer)
            #expect(one.first?.bytes.count == specs[0].bytes.count - 9)
        }
    }

    @Test("packets a run cannot hold end it and pass through unchanged")
    func notCoalescable() throws {
        let base = TCPPacket(payload: patternPayload(4000))
        let s = try cut(base, gso: 1000)
        // Each one sits where s[2] would be, with s[2]'s sequence number.
        var x = base
        x.sequence &+= 2000
        x.payload = patternPayload(1000)
        func variant(_ change: (inout TCPPacket) -> Void) -> [UInt8] {
            var p = x
            change(&p)
            return p.bytes
        }
        var others: [[UInt8]] = [
            variant { $0.flags = Flag.ack | Flag.syn }, variant { $0.flags = Flag.ack | Flag.rst },
            variant { $0.flags = Flag.ack | Flag.urg }, variant { $0.flags = Flag.ack | Flag.ece },
            variant { $0.flags = Flag.ack | Flag.cwr }, variant { $0.flags = Flag.ack | Flag.fin },
            variant { $0.flags = Flag.psh }, variant { $0.flags = 0 }, variant { $0.payload = [] },
        ]
        // Reserved bits / AE in the data offset byte.
        var reserved = x.bytes
        reserved[32] |= 0x01
        put16(&reserved, 36, 0)
        put16(&reserved, 36, ~referenceSum(referencePseudoHeader(reserved, proto: 6, length: reserved.count - 20) + Array(reserved[20...])))
        others.append(reserved)
        // IPv4 options.
        var options = x.bytes
        options.insert(contentsOf: [1, 1, 1, 0], at: 20)
        options[0] = 0x46
        put16(&options, 2, UInt16(options.count))
        put16(&options, 10, 0)
        put16(&options, 10, ~referenceSum(Array(options[0..<24])))
        others.append(options)
        // Fragments: MF, and an offset.
        for fragment: UInt16 in [0x6000, 0x4001] {
            var p = x.bytes
            put16(&p, 6, fragment)
            put16(&p, 10, 0)
            put16(&p, 10, ~referenceSum(Array(p[0..<20])))
            others.append(p)
        }
        for other in others {
            expectPassesThrough(other, between: s)
        }

        // IPv6 with a hop-by-hop header (PadN) before TCP.
        let s6 = try cut(TCPPacket.v6(patternPayload(3000)), gso: 1000)
        var hopByHop = s6[1]
        hopByHop.insert(contentsOf: [6, 0, 1, 4, 0, 0, 0, 0], at: 40)
        hopByHop[6] = 0
        put16(&hopByHop, 4, be16(hopByHop, 4) + 8)
        var coalescer = TCPCoalescer()
        #expect(coalesce([s6[0], hopByHop, s6[2]], with: &coalescer) == [alone(s6[0]), alone(hopByHop), alone(s6[2])])
    }

    @Test("a segment whose headers differ from the run's starts a new run")
    func headerDifferences() {
        func check(_ base: TCPPacket, _ change: (inout TCPPacket) -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
            var specs = flow(base, sizes: [1000, 1000, 1000])
            change(&specs[1])
            change(&specs[2])
            let s = specs.map(\.bytes)
            var coalescer = TCPCoalescer()
            let out = coalesce(s, with: &coalescer)
            #expect(out.count == 2, sourceLocation: sourceLocation)
            #expect(out.first == alone(s[0]), sourceLocation: sourceLocation)
            expectMerged(out.last, of: [s[1], s[2]], sourceLocation: sourceLocation)
        }
        let v4 = TCPPacket(payload: []), v6 = TCPPacket.v6()
        for base in [v4, v6] {
            check(base) { $0.acknowledgment &+= 1 }
            check(base) { $0.window &+= 1 }
            check(base) { $0.options[5] ^= 1 }
            check(base) { $0.options = [1, 1, 1, 1] + timestampOptions }
            check(base) { $0.ttl = 63 }
            check(base) { $0.tos = 0x10 }
            check(base) { $0.source[3] ^= 1 }
            check(base) { $0.destination[2] ^= 1 }
            check(base) { $0.sourcePort = 1 }
            check(base) { $0.destinationPort = 80 }
        }
        check(v4) { $0.dontFragment = false }
        check(v6) { $0.flowLabel = 1 }
        // The IPv4 identification may differ: it is not compared.
        var specs = flow(v4, sizes: [1000, 1000])
        specs[1].identification = 9
        var coalescer = TCPCoalescer()
        let out = coalesce(specs.map(\.bytes), with: &coalescer)
        #expect(out.count == 1 && out.first?.header.gsoType == VirtioNetHeader.gsoTCPv4)
    }

    @Test("counters count absorbed segments and merged runs")
    func counters() throws {
        let s = try cut(TCPPacket(payload: patternPayload(6000)), gso: 1000)
        var coalescer = TCPCoalescer()
        _ = coalesce([s[0], s[1], s[2]], with: &coalescer)
        _ = coalesce([s[3]], with: &coalescer)
        _ = coalesce([s[4], s[5]], with: &coalescer)
        #expect(coalescer.coalescedPackets == 3)
        #expect(coalescer.superPackets == 2)
    }

    @Test("random and damaged packets never crash the coalescer, and every merge cuts back into valid segments")
    func fuzz() throws {
        var rng = SplitMix64(seed: 0xC0A1)
        let valid = try cut(TCPPacket(payload: patternPayload(6000)), gso: 1000)
            + (try cut(TCPPacket.v6(patternPayload(3000)), gso: 700))
        var coalescer = TCPCoalescer(capacity: 4000)
        var merges = 0
        var cursor = 0
        for _ in 0..<3000 {
            // Mostly the flows in order, so runs form; sometimes damaged or random packets instead.
            let next = valid[cursor % valid.count]
            cursor += 1
            var packet: [UInt8]
            switch Int.random(in: 0..<10, using: &rng) {
            case 0:
                packet = (0..<Int.random(in: 0...120, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if !packet.isEmpty { packet[0] = packet[0] & 0x0F | (Bool.random(using: &rng) ? 0x40 : 0x60) }
            case 1:
                packet = next
                packet[Int.random(in: 0..<80, using: &rng)] = .random(in: 0...255, using: &rng)
            case 2:
                packet = next
                packet.removeLast(Int.random(in: 0...packet.count, using: &rng))
            default:
                packet = next
            }
            var out: [Emitted] = []
            packet.withUnsafeBytes { raw in coalescer.push(raw) { h, b in out.append(Emitted(header: h, bytes: Array(b))) } }
            if Int.random(in: 0..<5, using: &rng) == 0 {
                coalescer.flush { h, b in out.append(Emitted(header: h, bytes: Array(b))) }
            }
            for e in out where e.header != .none {
                merges += 1
                #expect(e.bytes.count <= 4000)
                let again = try segment(e.bytes, header: e.header)
                #expect(again.count > 1)
                #expect(again.allSatisfy { transportChecksumValid($0, proto: 6) })
            }
            for e in out where e.header == .none && e.bytes != packet {
                #expect(transportChecksumValid(e.bytes, proto: 6), "a held segment goes out only if it verified")
            }
        }
        #expect(merges > 50)
    }
}
