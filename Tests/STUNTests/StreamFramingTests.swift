import Testing

@testable import STUN

/// RFC 8656 §3.1 / §12.5: STUN and (padded) ChannelData back to back on a TCP stream.
@Suite("Stream framing")
struct StreamFramingTests {
    func next(_ bytes: [UInt8], max: Int = StreamFraming.largestWire) -> StreamFraming.Next {
        bytes.withUnsafeBytes { StreamFraming.next($0, maxWire: max) }
    }

    static func channelData(_ channel: UInt16, _ payload: [UInt8], padded: Bool = true) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 4)
        header.withUnsafeMutableBytes { ChannelData.writeHeader(channel: channel, length: payload.count, to: $0.baseAddress!) }
        let pad = padded ? (4 - payload.count % 4) % 4 : 0
        return header + payload + [UInt8](repeating: 0, count: pad)
    }

    static func binding() -> [UInt8] {
        Message(type: MessageType(method: .binding, messageClass: .request), transactionID: .random(),
                attributes: [.software("framing test")]).encode(fingerprint: true)
    }

    /// What a shell does with each read: append, cut every whole message, keep the rest.
    static func reassemble(_ stream: [UInt8], chunks: [Int]) -> (messages: [[UInt8]], rest: [UInt8], failure: StreamFraming.Next?) {
        var buffer: [UInt8] = []
        var messages: [[UInt8]] = []
        var offset = 0
        var chunk = 0
        while offset < stream.count {
            let n = min(chunks[chunk % chunks.count], stream.count - offset)
            chunk += 1
            buffer += stream[offset..<offset + n]
            offset += n
            while true {
                let step = buffer.withUnsafeBytes { StreamFraming.next($0, maxWire: StreamFraming.largestWire) }
                guard case .message(let length, let wire) = step else {
                    if step != .needMore { return (messages, buffer, step) }
                    break
                }
                messages.append(Array(buffer[0..<length]))
                buffer.removeFirst(wire)
            }
        }
        return (messages, buffer, nil)
    }

    @Test("a STUN message is cut at 20 bytes plus its length")
    func stunMessage() {
        let m = Self.binding()
        #expect(next(m) == .message(length: m.count, wire: m.count))
        #expect(next(m + [0x40, 0x01]) == .message(length: m.count, wire: m.count), "the next message's start stays")
    }

    @Test("ChannelData is handed on without its padding and consumed with it")
    func padding() {
        for n in [0, 1, 2, 3, 4, 5, 7, 100, 1201] {
            let frame = Self.channelData(0x4001, [UInt8](repeating: 9, count: n))
            #expect(next(frame) == .message(length: 4 + n, wire: frame.count))
            #expect(frame.count % 4 == 0)
        }
    }

    @Test("unpadded ChannelData on a stream waits for the padding (it is mandatory there)")
    func unpaddedWaits() {
        #expect(next(Self.channelData(0x4001, [1, 2, 3], padded: false)) == .needMore)
    }

    @Test("a partial header or body asks for more, at every cut")
    func partial() {
        for message in [Self.binding(), Self.channelData(0x4002, [UInt8](repeating: 1, count: 37))] {
            for cut in 0..<message.count {
                #expect(next(Array(message[0..<cut])) == .needMore, "cut at \(cut)")
            }
        }
    }

    @Test("messages coalesced into one read, or split over many, come out whole and in order")
    func coalescedAndSplit() {
        var rng = SystemRandomNumberGenerator()
        var stream: [UInt8] = []
        var expected: [[UInt8]] = []
        for i in 0..<50 {
            if i % 3 == 0 {
                let m = Self.binding()
                stream += m
                expected.append(m)
            } else {
                let payload = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                stream += Self.channelData(0x4000 + UInt16(i), payload)
                expected.append(Self.channelData(0x4000 + UInt16(i), payload, padded: false))
            }
        }
        for chunks in [[stream.count], [1], [3], [7, 1, 300], [4096], [19, 21]] {
            let r = Self.reassemble(stream, chunks: chunks)
            #expect(r.failure == nil)
            #expect(r.rest.isEmpty)
            #expect(r.messages == expected, "chunks \(chunks)")
        }
    }

    @Test("a message larger than the bound is refused from its header alone")
    func oversized() {
        let header = Array(Self.channelData(0x4001, [UInt8](repeating: 0, count: 2000)).prefix(4))
        #expect(next(header, max: 1024) == .tooLarge(wire: 2004))
        let stun = Array(Self.binding().prefix(8))
        #expect(next(stun, max: 8) == .tooLarge(wire: Self.binding().count))
        #expect(StreamFraming.largestWire == 65_540)
    }

    @Test("anything but STUN or ChannelData cannot be framed")
    func invalid() {
        #expect(next([0x80, 0, 0, 0]) == .invalid, "first bits 10")
        #expect(next([0xC0, 0, 0, 0]) == .invalid, "first bits 11")
        #expect(next([0x00, 0x01, 0x00, 0x00, 0xDE, 0xAD, 0xBE, 0xEF]) == .invalid, "no magic cookie")
        #expect(next([0x00, 0x01, 0x00, 0x03, 0x21, 0x12, 0xA4, 0x42]) == .invalid, "length not a multiple of 4")
        #expect(next([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC]) == .invalid, "a TLS ClientHello on the TCP port")
    }
}
