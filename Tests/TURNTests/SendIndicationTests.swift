import FZCore
import FZTestSupport
import Testing

@testable import STUN
@testable import TURN

/// A Send indication with exactly these attributes in this order (FINGERPRINT appended when asked).
func rawSend(_ attributes: [Attribute], fingerprint: Bool = false) -> [UInt8] {
    Message(type: MessageType(method: .send, messageClass: .indication), transactionID: .random(), attributes: attributes)
        .encode(fingerprint: fingerprint)
}

/// `message` with one more attribute after its last, length field updated (no integrity fix-up).
func appending(_ type: UInt16, _ value: [UInt8], to message: [UInt8]) -> [UInt8] {
    var out = message + [UInt8(type >> 8), UInt8(type & 0xFF), UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
    out += [UInt8](repeating: 0, count: (4 - value.count % 4) % 4)
    let length = out.count - Message.headerSize
    out[2] = UInt8(length >> 8)
    out[3] = UInt8(length & 0xFF)
    return out
}

/// Recomputes a trailing FINGERPRINT, so a mutation of the bytes before it is not caught by the CRC alone.
func refreshingFingerprint(_ bytes: [UInt8]) -> [UInt8] {
    guard bytes.count >= 28, bytes[bytes.count - 8] == 0x80, bytes[bytes.count - 7] == 0x28 else { return bytes }
    var out = bytes
    let f = out.count - 8
    let crc = out.withUnsafeBytes { Fingerprint.value(UnsafeRawBufferPointer(rebasing: $0[0..<f])) }
    out.replaceSubrange((f + 4)..<(f + 8), with: [UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)])
    return out
}

func payload(_ count: Int, seed: Int = 0) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) } }

@Suite("Send indications read in place (RFC 8656 §10.2)")
struct SendIndicationTests {
    /// A dual-stack allocation for alice with permissions for `publicPeer` and `publicPeer6`.
    static func permitted(_ h: inout Harness) -> (v4: SocketAddress, v6: SocketAddress) {
        let r = h.allocate([.requestedTransport(17), .additionalAddressFamily(.v6)])!
        #expect(h.authed(.createPermission, [.xorPeerAddress(publicPeer)])?.isSuccess == true)
        #expect(h.authed(.createPermission, [.xorPeerAddress(publicPeer6)])?.isSuccess == true)
        return (r.xorRelayedAddresses.first { $0.family == .v4 }!, r.xorRelayedAddresses.first { $0.family == .v6 }!)
    }

    /// Runs `bytes` through the fast path and, on a copy of the server, through the full decoder:
    /// the actions and every counter must agree, and a forwarded range must hold `Message.data`.
    @discardableResult
    static func decide(_ h: inout Harness, _ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation)
        -> ClientAction
    {
        var reference = h.server
        let expected = bytes.withUnsafeBytes {
            reference.handleClient($0, from: alice, listener: listener, now: h.now, sendFastPath: false)
        }
        let action = h.send(bytes)
        #expect(action == expected, sourceLocation: sourceLocation)
        #expect(h.server.stats == reference.stats, sourceLocation: sourceLocation)
        if case .forward(_, _, let offset, let length, _) = expected {
            #expect(Array(bytes[offset..<(offset + length)]) == (try? Message.decode(bytes))?.data,
                    sourceLocation: sourceLocation)
        }
        return action
    }

    @Test("a Send indication is relayed in place: the DATA value's offset and length, the first peer, DONT-FRAGMENT")
    func relayedInPlace() {
        var h = Harness()
        let relayed = Self.permitted(&h)
        let data = payload(5)
        var bytes = rawSend([.xorPeerAddress(publicPeer), .dontFragment, .data(data)])
        #expect(Self.decide(&h, bytes)
                == .forward(from: relayed.v4, to: publicPeer, payloadOffset: 40, payloadLength: 5, dontFragment: true))
        #expect(Array(bytes[40..<45]) == data)

        // The first XOR-PEER-ADDRESS and the first DATA count; the relayed address is the peer's family's.
        bytes = rawSend([.xorPeerAddress(publicPeer6), .xorPeerAddress(publicPeer), .data([1, 2]), .data([3])])
        #expect(Self.decide(&h, bytes)
                == .forward(from: relayed.v6, to: publicPeer6, payloadOffset: 60, payloadLength: 2, dontFragment: false))

        // Empty DATA is relayed as an empty datagram.
        bytes = rawSend([.xorPeerAddress(publicPeer), .data([])])
        #expect(Self.decide(&h, bytes)
                == .forward(from: relayed.v4, to: publicPeer, payloadOffset: 36, payloadLength: 0, dontFragment: false))
        #expect(h.server.stats.sendIndicationsIn == 3)
        #expect(h.server.stats.relayedBytesToPeers == 7)
    }

    @Test("a correct FINGERPRINT is accepted and a wrong one drops the indication as malformed")
    func fingerprint() {
        var h = Harness()
        let relayed = Self.permitted(&h)
        var bytes = rawSend([.xorPeerAddress(publicPeer), .data([9, 8, 7])], fingerprint: true)
        #expect(Self.decide(&h, bytes)
                == .forward(from: relayed.v4, to: publicPeer, payloadOffset: 36, payloadLength: 3, dontFragment: false))
        bytes[bytes.count - 1] ^= 1
        let before = h.server.stats
        #expect(Self.decide(&h, bytes) == .none)
        #expect(h.server.stats.malformedDropped == before.malformedDropped + 1)
        #expect(h.server.stats.sendIndicationsIn == before.sendIndicationsIn, "a message that does not decode is not counted as one")

        // FINGERPRINT must be last.
        let notLast = appending(AttributeType.software, Array("x".utf8),
                                to: rawSend([.xorPeerAddress(publicPeer), .data([1])], fingerprint: true))
        #expect(Self.decide(&h, notLast) == .none)
        #expect(h.server.stats.malformedDropped == before.malformedDropped + 2)
    }

    @Test("an unknown comprehension-required attribute drops the indication; an unknown optional one is ignored")
    func unknownAttributes() {
        var h = Harness()
        let relayed = Self.permitted(&h)
        let before = h.server.stats
        let required = rawSend([.xorPeerAddress(publicPeer), .unknown(type: 0x0030, value: [1]), .data([1])])
        #expect(Self.decide(&h, required) == .none)
        #expect(h.server.stats.malformedDropped == before.malformedDropped + 1)
        #expect(h.server.stats.sendIndicationsIn == before.sendIndicationsIn + 1)
        let optional = rawSend([.unknown(type: 0xC001, value: [1, 2, 3, 4, 5]), .xorPeerAddress(publicPeer), .data([1])])
        #expect(Self.decide(&h, optional)
                == .forward(from: relayed.v4, to: publicPeer, payloadOffset: 48, payloadLength: 1, dontFragment: false))
    }

    @Test("drops for no allocation, a denied peer, no permission, another family or a missing attribute count as before")
    func drops() {
        var h = Harness()
        #expect(Self.decide(&h, sendIndication(to: publicPeer, [1])) == .none)
        #expect(h.server.stats.noAllocationDropped == 1)
        #expect(h.server.stats.sendIndicationsIn == 1)

        _ = h.allocate()  // IPv4 only
        #expect(h.authed(.createPermission, [.xorPeerAddress(publicPeer)])?.isSuccess == true)
        #expect(Self.decide(&h, sendIndication(to: SocketAddress("10.0.0.1:5000")!, [1])) == .none)
        #expect(h.server.stats.peerDenied == 1)
        #expect(Self.decide(&h, sendIndication(to: SocketAddress("8.8.4.4:5000")!, [1])) == .none)
        #expect(h.server.stats.noPermissionDropped == 1)
        #expect(Self.decide(&h, sendIndication(to: publicPeer6, [1])) == .none)
        #expect(h.server.stats.unexpectedDropped == 1)
        #expect(Self.decide(&h, rawSend([.xorPeerAddress(publicPeer)])) == .none)
        #expect(Self.decide(&h, rawSend([.data([1])])) == .none)
        #expect(h.server.stats.malformedDropped == 2)
        #expect(h.server.stats.sendIndicationsIn == 6)
        #expect(h.server.stats.relayedBytesToPeers == 0)
    }

    @Test("an allocation's DONT-FRAGMENT applies to every Send indication on it")
    func allocationDontFragment() {
        var h = Harness()
        let relayed = h.allocate([.requestedTransport(17), .dontFragment])!.xorRelayedAddresses.first!
        _ = h.authed(.createPermission, [.xorPeerAddress(publicPeer)])
        #expect(Self.decide(&h, sendIndication(to: publicPeer, [1]))
                == .forward(from: relayed, to: publicPeer, payloadOffset: 36, payloadLength: 1, dontFragment: true))
    }

    @Test("attributes the scan leaves to the full decoder give the same in-place forward")
    func decoderFallback() throws {
        var h = Harness()
        let relayed = Self.permitted(&h)
        let software = rawSend([.software("fz"), .xorPeerAddress(publicPeer), .data([4, 5, 6])])
        #expect(software.withUnsafeBytes { SendIndication.scan($0) } == .needsDecoder)
        #expect(Self.decide(&h, software)
                == .forward(from: relayed.v4, to: publicPeer, payloadOffset: 44, payloadLength: 3, dontFragment: false))

        // After MESSAGE-INTEGRITY the decoder ignores everything but FINGERPRINT (RFC 8489 §14.5):
        // a DATA there does not count, before it the first one does.
        let key = MessageIntegrity(key: [1, 2, 3])
        let signed = Message(type: MessageType(method: .send, messageClass: .indication), transactionID: .random(),
                             attributes: [.xorPeerAddress(publicPeer), .data([1, 2])]).encode(integrity: key)
        #expect(Self.decide(&h, appending(AttributeType.data, [9, 9, 9], to: signed))
                == .forward(from: relayed.v4, to: publicPeer, payloadOffset: 36, payloadLength: 2, dontFragment: false))
        let dataAfterIntegrity = Message(type: MessageType(method: .send, messageClass: .indication), transactionID: .random(),
                                         attributes: [.xorPeerAddress(publicPeer)]).encode(integrity: key)
        let before = h.server.stats.malformedDropped
        #expect(Self.decide(&h, appending(AttributeType.data, [9], to: dataAfterIntegrity)) == .none)
        #expect(h.server.stats.malformedDropped == before + 1)
        // An invalid known value the scan does not parse is rejected by the decoder.
        let badSoftware = appending(AttributeType.software, [0xFF], to: sendIndication(to: publicPeer, [1]))
        #expect(Self.decide(&h, badSoftware) == .none)
        #expect(h.server.stats.malformedDropped == before + 2)
    }

    /// Valid Send indications of every shape the scan handles, and a few it leaves to the decoder.
    static var seeds: [[UInt8]] {
        let key = MessageIntegrity(key: [7])
        return [
            rawSend([.xorPeerAddress(publicPeer), .data(payload(5))]),
            rawSend([.xorPeerAddress(publicPeer6), .dontFragment, .data(payload(0))], fingerprint: true),
            rawSend([.unknown(type: 0x8050, value: [1, 2, 3]), .xorPeerAddress(publicPeer), .data(payload(1200))],
                    fingerprint: true),
            rawSend([.xorPeerAddress(publicPeer), .xorPeerAddress(publicPeer6), .data([1, 2]), .data([3])]),
            rawSend([.data(payload(7)), .unknown(type: 0x0031, value: []), .xorPeerAddress(publicPeer6)]),
            rawSend([.software("fz"), .xorPeerAddress(publicPeer), .data(payload(3))]),
            Message(type: MessageType(method: .send, messageClass: .indication), transactionID: .random(),
                    attributes: [.xorPeerAddress(publicPeer), .data(payload(2))]).encode(integrity: key, fingerprint: true),
        ]
    }

    @Test("truncated Send indications never crash and are decided as the full decoder decides them")
    func truncations() {
        var h = Harness()
        _ = Self.permitted(&h)
        for seed in Self.seeds {
            for keep in 0...seed.count {
                var cut = Array(seed[0..<keep])
                Self.decide(&h, cut)
                // The same cut with a length field that agrees with it reaches the attribute walk.
                if keep >= Message.headerSize {
                    let length = keep - Message.headerSize
                    cut[2] = UInt8(length >> 8)
                    cut[3] = UInt8(length & 0xFF)
                    Self.decide(&h, cut)
                }
            }
        }
    }

    @Test("600 garbled Send indications never crash and the fast path decides each as the full decoder does")
    func mutations() {
        var h = Harness()
        _ = Self.permitted(&h)
        var rng = SplitMix64(seed: 0x0016_2112)
        let seeds = Self.seeds
        let interesting: [UInt16] = [
            AttributeType.xorPeerAddress, AttributeType.data, AttributeType.dontFragment, AttributeType.fingerprint,
            AttributeType.messageIntegrity, AttributeType.software, AttributeType.xorMappedAddress, 0x0030, 0x8050,
        ]
        var relayed = 0
        var dropped = 0
        for i in 0..<600 {
            var bytes = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            // Attribute starts, for mutations aimed at a type or length field.
            var starts: [Int] = []
            var o = Message.headerSize
            while o + 4 <= bytes.count {
                starts.append(o)
                o += 4 + ((Int(bytes[o + 2]) << 8 | Int(bytes[o + 3])) + 3) & ~3
            }
            switch i % 4 {
            case 0:
                // A few flipped bits anywhere.
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    let bit = Int.random(in: 0..<(bytes.count * 8), using: &rng)
                    bytes[bit / 8] ^= 1 << UInt8(bit % 8)
                }
            case 1:
                // An attribute retyped.
                let at = starts[Int.random(in: 0..<starts.count, using: &rng)]
                let type = Bool.random(using: &rng)
                    ? interesting[Int.random(in: 0..<interesting.count, using: &rng)] : UInt16.random(in: 0...0xFFFF, using: &rng)
                bytes[at] = UInt8(type >> 8)
                bytes[at + 1] = UInt8(type & 0xFF)
            case 2:
                // An attribute's length changed.
                let at = starts[Int.random(in: 0..<starts.count, using: &rng)]
                let length = Int.random(in: 0...40, using: &rng)
                bytes[at + 2] = UInt8(length >> 8)
                bytes[at + 3] = UInt8(length & 0xFF)
            default:
                // A random byte after the header.
                bytes[Int.random(in: Message.headerSize..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            // Half the time the CRC is fixed, so the mutation itself is judged.
            if Bool.random(using: &rng) { bytes = refreshingFingerprint(bytes) }
            if case .forward = Self.decide(&h, bytes) { relayed += 1 } else { dropped += 1 }
        }
        #expect(relayed > 50)
        #expect(dropped > 50)
    }
}

@Suite("Data indications (RFC 8656 §11.3)")
struct DataIndicationActionTests {
    @Test("a peer datagram without a channel asks the shell for a Data indication from that peer")
    func dataIndication() {
        var h = Harness()
        let relayed = SendIndicationTests.permitted(&h)
        #expect(h.fromPeer([1, 2, 3], peer: publicPeer, relayed: relayed.v4)
                == .dataIndication(client: alice, listener: listener, peer: publicPeer))
        #expect(h.fromPeer([], peer: publicPeer6, relayed: relayed.v6)
                == .dataIndication(client: alice, listener: listener, peer: publicPeer6))
        #expect(h.server.stats.relayedBytesToClients == 3)
    }

    @Test("a Data indication larger than the shell can send, or than a STUN length field holds, is dropped as oversize")
    func oversize() {
        var h = Harness(config: { $0.maxDataIndicationSize = 100 })
        let relayed = SendIndicationTests.permitted(&h)
        // IPv4: 36 bytes in front of the payload; IPv6: 48.
        #expect(h.fromPeer(payload(64), peer: publicPeer, relayed: relayed.v4) != .none)
        #expect(h.fromPeer(payload(65), peer: publicPeer, relayed: relayed.v4) == .none)
        #expect(h.fromPeer(payload(52), peer: publicPeer6, relayed: relayed.v6) != .none)
        #expect(h.fromPeer(payload(53), peer: publicPeer6, relayed: relayed.v6) == .none)
        #expect(h.server.stats.oversizeDropped == 2)
        #expect(h.server.stats.relayedBytesToClients == 64 + 52)

        var big = Harness()
        let r = SendIndicationTests.permitted(&big)
        #expect(big.fromPeer(payload(65_516), peer: publicPeer, relayed: r.v4) != .none)
        #expect(big.fromPeer(payload(65_517), peer: publicPeer, relayed: r.v4) == .none)
        #expect(big.fromPeer(payload(65_504), peer: publicPeer6, relayed: r.v6) != .none)
        #expect(big.fromPeer(payload(65_505), peer: publicPeer6, relayed: r.v6) == .none)
        #expect(big.server.stats.oversizeDropped == 2)
    }
}
