import FZCore
import Testing

@testable import STUN

@Suite("Attribute round trips")
struct AttributeRoundTripTests {
    static let v4 = SocketAddress(IPv4Address(203, 0, 113, 7), 49152)
    static let v6 = SocketAddress("[2001:db8::1:ff00:42]:3478")!

    /// One value of every attribute the codec knows, plus unknown ones, with lengths that
    /// exercise every padding remainder.
    static let all: [Attribute] = [
        .mappedAddress(v4), .mappedAddress(v6),
        .username("alice"), .username(""), .username("\u{30DE}\u{30C8}\u{30EA}"),
        .messageIntegrity([UInt8](repeating: 0xAB, count: 20)),
        .errorCode(.staleNonce), .errorCode(ErrorCode(699, reason: "x")), .errorCode(ErrorCode(300, reason: "")),
        .unknownAttributes([]), .unknownAttributes([0x0003]), .unknownAttributes([0x0003, 0x7FFF, 0x0026]),
        .realm("example.org"), .nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
        .messageIntegritySHA256([UInt8](repeating: 1, count: 16)),
        .messageIntegritySHA256([UInt8](repeating: 2, count: 28)),
        .passwordAlgorithm(.md5), .passwordAlgorithm(.sha256),
        .passwordAlgorithm(PasswordAlgorithm(id: 0x1234, parameters: [1, 2, 3])),
        .passwordAlgorithm(PasswordAlgorithm(id: 0x1234, parameters: [1, 2, 3, 4, 5])),
        .userhash([UInt8](0..<32)),
        .xorMappedAddress(v4), .xorMappedAddress(v6),
        .passwordAlgorithms([.md5, .sha256]), .passwordAlgorithms([]),
        .passwordAlgorithms([PasswordAlgorithm(id: 9, parameters: [7]), .sha256, PasswordAlgorithm(id: 10, parameters: [1, 2])]),
        .alternateDomain("turn.example.net"),
        .software("fz-relay 1.0"),
        .alternateServer(v4), .alternateServer(v6),
        .fingerprint(0xDEAD_BEEF),
        .channelNumber(0x4000), .channelNumber(0x4FFF),
        .lifetime(600), .lifetime(0),
        .xorPeerAddress(v4), .xorPeerAddress(v6),
        .data([]), .data([1]), .data([1, 2]), .data([1, 2, 3]), .data([UInt8](repeating: 9, count: 1200)),
        .xorRelayedAddress(v4), .xorRelayedAddress(v6),
        .requestedAddressFamily(.v4), .requestedAddressFamily(.v6),
        .evenPort(reserve: true), .evenPort(reserve: false),
        .requestedTransport(17),
        .dontFragment,
        .reservationToken(0x0102_0304_0506_0708),
        .additionalAddressFamily(.v6),
        .addressErrorCode(family: .v6, .addressFamilyNotSupported),
        .addressErrorCode(family: .v4, ErrorCode(508, reason: "")),
        .icmp(type: 3, code: 4, data: 1400),
        .priority(0x6E00_01FF),
        .useCandidate,
        .iceControlled(0x932F_F9B1_5126_3B36), .iceControlling(.max),
        .unknown(type: 0x0003, value: [0, 0, 0, 6]), .unknown(type: 0xC001, value: [1, 2, 3, 4, 5]),
        .unknown(type: 0x7FFF, value: []),
    ]

    @Test("each attribute survives encode and decode", arguments: all.filter { !$0.isTrailer })
    func roundTrip(attribute: Attribute) throws {
        for transactionID in [sampleTransactionID, TransactionID.random()] {
            let message = Message(type: MessageType(method: .allocate, messageClass: .request),
                                  transactionID: transactionID, attributes: [attribute])
            let bytes = message.encode()
            #expect(bytes.count % 4 == 0)
            #expect(bytes.count == message.encodedSize())
            let decoded = try Message.decode(bytes)
            #expect(decoded == message)
            #expect(decoded.attributes.first?.type == attribute.type)
        }
    }

    @Test("integrity and fingerprint attributes in `attributes` are recomputed, not copied",
          arguments: all.filter(\.isTrailer))
    func trailersAreRecomputed(attribute: Attribute) throws {
        let message = Message(type: MessageType(method: .binding, messageClass: .request),
                              transactionID: sampleTransactionID, attributes: [.software("x"), attribute])
        let plain = try Message.decode(message.encode())
        #expect(plain.attributes == [.software("x")])

        let key: [UInt8] = Array("secret".utf8)
        for algorithm in [IntegrityAlgorithm.sha1, .sha256] {
            let signed = try Message.decode(message.encode(integrity: MessageIntegrity(key: key, algorithm: algorithm),
                                                           fingerprint: true))
            #expect(signed.attributes.count == 3)
            #expect(signed.attributes[0] == .software("x"))
            #expect(signed.attributes[1].type == algorithm.attributeType)
            #expect(signed.hasFingerprint)
            #expect(signed.checkIntegrity(key: key) == .valid(algorithm))
            // (key + [0] would be the same HMAC key: HMAC zero-pads short keys.)
            #expect(signed.checkIntegrity(key: key + [1]) == .invalid)
            #expect(signed.checkIntegrity(key: Array("Secret".utf8)) == .invalid)
        }
    }

    @Test("all attributes together round-trip in order, repeated ones included")
    func everythingTogether() throws {
        let attributes = Self.all.filter { !$0.isTrailer }
        let message = Message(type: MessageType(method: .allocate, messageClass: .successResponse),
                              transactionID: .random(), attributes: attributes)
        let decoded = try Message.decode(message.encode(integrity: MessageIntegrity(key: [1, 2, 3]), fingerprint: true))
        #expect(Array(decoded.attributes.dropLast(2)) == attributes)
        #expect(decoded.xorPeerAddresses == [Self.v4, Self.v6])
        #expect(decoded.xorRelayedAddresses == [Self.v4, Self.v6])
        #expect(decoded.mappedAddress == Self.v4)
        #expect(decoded.alternateServer == Self.v4)
        #expect(decoded.username == "alice")
        #expect(decoded.errorCode == .staleNonce)
        #expect(decoded.unknownAttributes == [])
        #expect(decoded.passwordAlgorithm == .md5)
        #expect(decoded.passwordAlgorithms == [.md5, .sha256])
        #expect(decoded.alternateDomain == "turn.example.net")
        #expect(decoded.channelNumber == 0x4000)
        #expect(decoded.lifetime == 600)
        #expect(decoded.data == [])
        #expect(decoded.requestedAddressFamily == .v4)
        #expect(decoded.additionalAddressFamily == .v6)
        #expect(decoded.evenPort == true)
        #expect(decoded.requestedTransport == 17)
        #expect(decoded.dontFragment)
        #expect(decoded.reservationToken == 0x0102_0304_0506_0708)
        #expect(decoded.addressErrorCodes.count == 2)
        #expect(decoded.icmp?.data == 1400)
        #expect(decoded.useCandidate)
        #expect(decoded.iceControlling == .max)
        #expect(decoded.unknownComprehensionRequired == [0x0003, 0x7FFF])
        #expect(decoded.checkIntegrity(key: [1, 2, 3]) == .valid(.sha1))
        #expect(decoded.hasMessageIntegrity)
    }

    @Test("XOR addresses are obfuscated on the wire with the cookie and, for IPv6, the transaction ID")
    func xorObfuscation() throws {
        let message = Message(type: MessageType(method: .binding, messageClass: .successResponse),
                              transactionID: sampleTransactionID,
                              attributes: [.xorMappedAddress(Self.v6), .mappedAddress(Self.v6)])
        let bytes = message.encode()
        let plain = [0x00, 0x02] + be16(3478) + Self.v6.ip.v6Bytes
        #expect(Array(bytes[48..<68]) == plain)
        let key = be32(0x2112_A442) + sampleTransactionID.bytes
        let xored = [0x00, 0x02] + be16(3478 ^ 0x2112) + zip(Self.v6.ip.v6Bytes, key).map { $0 ^ $1 }
        #expect(Array(bytes[24..<44]) == xored)
    }

    @Test("encode(into:) writes the same bytes, and refuses buffers that are too small")
    func encodeIntoBuffer() {
        let message = Message(type: MessageType(method: .data, messageClass: .indication), transactionID: .random(),
                              attributes: [.xorPeerAddress(Self.v4), .data([1, 2, 3, 4, 5])])
        let expected = message.encode(fingerprint: true)
        var buffer = [UInt8](repeating: 0xEE, count: 200)
        let written = buffer.withUnsafeMutableBytes { message.encode(into: $0, fingerprint: true) }
        #expect(written == expected.count)
        #expect(Array(buffer[0..<expected.count]) == expected)
        var small = [UInt8](repeating: 0, count: expected.count - 1)
        #expect(small.withUnsafeMutableBytes { message.encode(into: $0, fingerprint: true) } == nil)
        #expect(message.encode(into: UnsafeMutableRawBufferPointer(start: nil, count: 0)) == nil)
    }

    @Test("messages whose attributes exceed 65,535 bytes have no encoded size")
    func oversize() {
        // The largest IPv4 UDP payload fits a Data indication; a large IPv6 one does not.
        let v4 = Message(type: MessageType(method: .data, messageClass: .indication), transactionID: .random(),
                         attributes: [.xorPeerAddress(Self.v4), .data([UInt8](repeating: 0, count: 65_507))])
        #expect(v4.encodedSize() == 20 + 12 + 4 + 65_508)
        let message = Message(type: MessageType(method: .data, messageClass: .indication), transactionID: .random(),
                              attributes: [.xorPeerAddress(Self.v6), .data([UInt8](repeating: 0, count: 65_527))])
        #expect(message.encodedSize() == nil)
        #expect(message.encode().isEmpty)
        var buffer = [UInt8](repeating: 0, count: 70_000)
        #expect(buffer.withUnsafeMutableBytes { message.encode(into: $0) } == nil)
        let fits = Message(type: MessageType(method: .data, messageClass: .indication), transactionID: .random(),
                           attributes: [.data([UInt8](repeating: 0, count: 65_528))])
        #expect(fits.encodedSize() == 20 + 65_532)
        #expect(fits.encode().count == 20 + 65_532)
        #expect(fits.encodedSize(fingerprint: true) == nil)
    }

    @Test("a decoded PASSWORD-ALGORITHM may leave its parameter padding to the attribute padding")
    func passwordAlgorithmUnpaddedLength() throws {
        // Value length 4 + 3 (unpadded) instead of 4 + 4: same wire bytes, other length field.
        let single = rawMessage(attributes: [(0x001D, [0x12, 0x34, 0x00, 0x03, 1, 2, 3])])
        #expect(try Message.decode(single).passwordAlgorithm == PasswordAlgorithm(id: 0x1234, parameters: [1, 2, 3]))
        let list = rawMessage(attributes: [(0x8002, [0x00, 0x01, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01, 9])])
        #expect(try Message.decode(list).passwordAlgorithms == [.md5, PasswordAlgorithm(id: 0x1234, parameters: [9])])
    }
}

extension IPAddress {
    var v6Bytes: [UInt8] {
        if case .v6(let a) = self { return a.bytes }
        return []
    }
}
