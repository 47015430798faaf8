import Testing

@testable import STUN

@Suite("ChannelData framing and packet classification")
struct ChannelDataTests {
    func parse(_ bytes: [UInt8]) -> (channel: UInt16, length: Int)? {
        bytes.withUnsafeBytes { ChannelData.parse($0) }
    }

    @Test("a header written by writeHeader parses back, with or without padding")
    func roundTrip() throws {
        for length in [0, 1, 2, 3, 4, 5, 100, 1200, 65_535] {
            var header = [UInt8](repeating: 0, count: 4)
            header.withUnsafeMutableBytes { ChannelData.writeHeader(channel: 0x4001, length: length, to: $0.baseAddress!) }
            #expect(header == be16(0x4001) + be16(UInt16(length)))
            let payload = [UInt8](repeating: 0xAA, count: length)
            let unpadded = try #require(parse(header + payload))
            #expect(unpadded.channel == 0x4001 && unpadded.length == length)
            let padding = (4 - length % 4) % 4
            let padded = try #require(parse(header + payload + [UInt8](repeating: 0, count: padding)))
            #expect(padded.length == length)
        }
    }

    @Test("channel numbers outside 0x4000-0x7FFF are not ChannelData")
    func range() {
        #expect(parse(be16(0x4000) + be16(0)) != nil)
        #expect(parse(be16(0x4FFF) + be16(0)) != nil)
        #expect(parse(be16(0x6D7D) + be16(0)) != nil, "RFC 5766 range, used by coturn's clients")
        #expect(parse(be16(0x7FFF) + be16(0)) != nil)
        for channel: UInt16 in [0x0001, 0x3FFF, 0x8000, 0xFFFF] {
            #expect(parse(be16(channel) + be16(0)) == nil)
        }
    }

    @Test("lengths beyond the datagram, or trailing bytes beyond the padding, are rejected")
    func lengths() {
        #expect(parse([]) == nil)
        #expect(parse([0x40, 0x00, 0x00]) == nil)
        #expect(parse(be16(0x4000) + be16(5) + [1, 2, 3, 4]) == nil)
        #expect(parse(be16(0x4000) + be16(4) + [1, 2, 3, 4, 0, 0, 0, 0]) == nil)
        #expect(parse(be16(0x4000) + be16(1) + [1, 0, 0, 0, 0]) == nil)
        #expect(parse(be16(0x4000) + be16(1) + [1, 0, 0]) == nil)
        #expect(parse(be16(0x4000) + be16(1) + [1, 0, 0, 0])?.length == 1)
    }

    func classify(_ bytes: [UInt8]) -> PacketKind { bytes.withUnsafeBytes { PacketKind.classify($0) } }

    @Test("packets are told apart by first byte and magic cookie")
    func classification() throws {
        let stun = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: .random()).encode()
        #expect(classify(stun) == .stun)
        #expect(classify(try vector("rfc5769-2.2-ipv4-response")) == .stun)
        #expect(classify(Array(stun[0..<19])) == .other)
        var noCookie = stun
        noCookie[4] = 0
        #expect(classify(noCookie) == .other)
        var highType = stun
        highType[0] = 0x04
        #expect(classify(highType) == .other)
        #expect(classify(be16(0x4000) + be16(0)) == .channelData)
        #expect(classify(be16(0x4FFF) + be16(2) + [1, 2]) == .channelData)
        #expect(classify([0x40, 0x00]) == .other)
        #expect(classify([0x50, 0, 0, 0]) == .channelData)
        #expect(classify([0x80, 0, 0, 0]) == .other)
        #expect(classify([1, 0, 0, 0] + [UInt8](repeating: 7, count: 144)) == .other)  // WireGuard initiation
        #expect(classify([4, 0, 0, 0] + [UInt8](repeating: 7, count: 28)) == .other)  // WireGuard transport
        #expect(classify([]) == .other)
        #expect(classify([0x16, 0x03, 0x01]) == .other)  // TLS
    }
}
