import FZCore
import FZTestSupport
import Testing

@testable import STUN

@Suite("Send and Data indications without a Message")
struct IndicationTests {
    static let v4 = SocketAddress("192.0.2.1:32853")!
    static let v6 = SocketAddress("[2001:db8:1234:5678:11:2233:4455:6677]:32853")!

    @Test("the message type constants are Send and Data indications")
    func messageTypes() {
        #expect(SendIndication.messageType == MessageType(method: .send, messageClass: .indication).rawValue)
        #expect(DataIndication.messageType == MessageType(method: .data, messageClass: .indication).rawValue)
    }

    @Test("isKnown lists exactly the types the decoder parses itself")
    func knownTypes() {
        let id = TransactionID.random()
        for type in UInt16.min...UInt16.max {
            let decoded = [UInt8]().withUnsafeBytes { Attribute.decode(type: type, value: $0, transactionID: id) }
            let keptVerbatim = if case .unknown? = decoded { true } else { false }
            #expect(AttributeType.isKnown(type) == !keptVerbatim, "type 0x\(String(type, radix: 16))")
        }
    }

    @Test("the Data indication writer produces what Message.encode does, and it decodes with the right peer and data")
    func dataIndicationBytes() throws {
        for peer in [Self.v4, Self.v6] {
            for length in [0, 1, 2, 3, 4, 1200] {
                let data = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
                let id = TransactionID.random()
                let size = try #require(DataIndication.size(peer: peer, payloadLength: length))
                // Stale bytes in the buffer: the padding must come out as zeros.
                var buffer = [UInt8](repeating: 0xAA, count: size + 8)
                let written = buffer.withUnsafeMutableBytes { out in
                    data.withUnsafeBytes { DataIndication.write(peer: peer, transactionID: id, payload: $0, into: out) }
                }
                #expect(written == size)
                let bytes = Array(buffer[0..<size])
                let message = try Message.decode(bytes)
                #expect(message.type == MessageType(method: .data, messageClass: .indication))
                #expect(message.transactionID == id)
                #expect(message.xorPeerAddresses == [peer])
                #expect(message.data == data)
                let expected = Message(type: MessageType(method: .data, messageClass: .indication), transactionID: id,
                                       attributes: [.xorPeerAddress(peer), .data(data)]).encode()
                #expect(bytes == expected, "peer \(peer), \(length) bytes")
                #expect(DataIndication.overhead(peer: peer) == (peer.family == .v4 ? 36 : 48))
            }
        }
    }

    @Test("the writer builds around a payload already in place or overlapping the header's place")
    func inPlace() throws {
        let data = (0..<301).map { UInt8(truncatingIfNeeded: $0) }
        let id = TransactionID.random()
        let expected = Message(type: MessageType(method: .data, messageClass: .indication), transactionID: id,
                               attributes: [.xorPeerAddress(Self.v6), .data(data)]).encode()
        for payloadAt in [48, 0, 10, 60] {
            var buffer = [UInt8](repeating: 0xAA, count: 400)
            buffer.replaceSubrange(payloadAt..<(payloadAt + data.count), with: data)
            let written = buffer.withUnsafeMutableBytes { out in
                DataIndication.write(peer: Self.v6, transactionID: id,
                                     payload: UnsafeRawBufferPointer(rebasing: out[payloadAt..<(payloadAt + data.count)]), into: out)
            }
            #expect(written == expected.count)
            #expect(Array(buffer[0..<expected.count]) == expected, "payload at \(payloadAt)")
        }
    }

    @Test("the writer refuses a buffer too small and a payload past the STUN length field")
    func writerLimits() {
        let data = [UInt8](repeating: 1, count: 5)
        var small = [UInt8](repeating: 0, count: 36 + 7)
        let written = small.withUnsafeMutableBytes { out in
            data.withUnsafeBytes { DataIndication.write(peer: Self.v4, transactionID: .random(), payload: $0, into: out) }
        }
        #expect(written == nil)
        #expect(DataIndication.size(peer: Self.v4, payloadLength: 5) == 44)
        #expect(DataIndication.size(peer: Self.v4, payloadLength: 65_516) == 20 + 65_532)
        #expect(DataIndication.size(peer: Self.v4, payloadLength: 65_517) == nil)
        #expect(DataIndication.size(peer: Self.v6, payloadLength: 65_504) == 20 + 65_532)
        #expect(DataIndication.size(peer: Self.v6, payloadLength: 65_505) == nil)
    }

    /// What the scan must agree with: the decoded message's view of the same fields.
    static func check(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> SendIndication.Scan {
        let scan = bytes.withUnsafeBytes { SendIndication.scan($0) }
        let decoded = try? Message.decode(bytes)
        switch scan {
        case .indication(let s):
            guard let m = decoded else {
                Issue.record("the scan accepted what the decoder rejects", sourceLocation: sourceLocation)
                return scan
            }
            #expect(m.type == MessageType(method: .send, messageClass: .indication), sourceLocation: sourceLocation)
            #expect(s.peer == m.xorPeerAddresses.first, sourceLocation: sourceLocation)
            #expect(s.data.map { Array(bytes[$0]) } == m.data, sourceLocation: sourceLocation)
            #expect(s.dontFragment == m.dontFragment, sourceLocation: sourceLocation)
            #expect(s.hasUnknownComprehensionRequired == !m.unknownComprehensionRequired.isEmpty,
                    sourceLocation: sourceLocation)
            #expect(bytes.withUnsafeBytes { SendIndication.dataRange(inDecoded: $0) } == s.data,
                    sourceLocation: sourceLocation)
        case .malformed:
            #expect(decoded == nil, "the scan rejected what the decoder accepts", sourceLocation: sourceLocation)
        case .needsDecoder:
            if let m = decoded, m.type == MessageType(method: .send, messageClass: .indication) {
                #expect(m.attributes.contains {
                    AttributeType.isKnown($0.type)
                        && ![AttributeType.xorPeerAddress, AttributeType.data, AttributeType.dontFragment,
                             AttributeType.fingerprint].contains($0.type)
                }, "only other known attributes send a Send indication to the decoder", sourceLocation: sourceLocation)
            }
        }
        return scan
    }

    @Test("the scan accepts, rejects and reads 4,000 mutated Send indications as Message.decode does")
    func scanAgreesWithDecoder() {
        var rng = SplitMix64(seed: 0x0016)
        let send = MessageType(method: .send, messageClass: .indication)
        let seeds: [[UInt8]] = [
            Message(type: send, transactionID: .random(), attributes: [.xorPeerAddress(Self.v4), .data([1, 2, 3])]).encode(),
            Message(type: send, transactionID: .random(),
                    attributes: [.dontFragment, .xorPeerAddress(Self.v6), .unknown(type: 0x0040, value: [1]), .data([])])
                .encode(fingerprint: true),
            Message(type: send, transactionID: .random(),
                    attributes: [.unknown(type: 0xFFFF, value: [1, 2]), .data(Array(repeating: 7, count: 33)),
                                 .xorPeerAddress(Self.v4), .xorPeerAddress(Self.v6), .data([5])])
                .encode(fingerprint: true),
            Message(type: send, transactionID: .random(), attributes: [.software("x"), .xorPeerAddress(Self.v4), .data([1])])
                .encode(),
        ]
        var counts = (indication: 0, malformed: 0, decoder: 0)
        for _ in 0..<4_000 {
            var bytes = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let i = Int.random(in: 2..<bytes.count, using: &rng)
                bytes[i] = Bool.random(using: &rng) ? bytes[i] ^ (1 << UInt8.random(in: 0...7, using: &rng))
                    : UInt8.random(in: 0...255, using: &rng)
            }
            if Int.random(in: 0..<4, using: &rng) == 0 {
                let keep = Message.headerSize + 4 * Int.random(in: 0...((bytes.count - Message.headerSize) / 4), using: &rng)
                bytes = Array(bytes[0..<keep])
                bytes.replaceSubrange(2..<4, with: be16(UInt16(keep - Message.headerSize)))
            }
            switch Self.check(bytes) {
            case .indication: counts.indication += 1
            case .malformed: counts.malformed += 1
            case .needsDecoder: counts.decoder += 1
            }
        }
        #expect(counts.indication > 200)
        #expect(counts.malformed > 200)
        #expect(counts.decoder > 100)
    }

    @Test("the transaction ID pool hands out distinct IDs across refills")
    func transactionIDPool() {
        let pool = TransactionIDPool(byteCount: 30)  // two IDs per refill
        var seen = Set<TransactionID>()
        for _ in 0..<1000 { seen.insert(pool.take()) }
        #expect(seen.count == 1000)
        let big = TransactionIDPool()
        for _ in 0..<1000 { seen.insert(big.take()) }
        #expect(seen.count == 2000)
    }
}
