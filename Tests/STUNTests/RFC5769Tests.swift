import FZCore
import Testing

@testable import STUN

/// RFC 5769 test vectors. Their HMACs and CRCs cover every byte, so decoding them and
/// reproducing them checks the codec, HMAC-SHA1, CRC-32 and XOR addressing at once.
@Suite("RFC 5769 test vectors")
struct RFC5769Tests {
    static let shortTermKey = Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)

    @Test("the sample request decodes to its attributes and its integrity and fingerprint verify")
    func sampleRequestDecodes() throws {
        let bytes = try vector("rfc5769-2.1-request")
        let message = try Message.decode(bytes)
        #expect(message.type == MessageType(method: .binding, messageClass: .request))
        #expect(message.transactionID == sampleTransactionID)
        #expect(message.software == "STUN test client")
        #expect(message.priority == 0x6E00_01FF)
        #expect(message.iceControlled == 0x932F_F9B1_5126_3B36)
        #expect(message.username == "evtj:h6vY")
        #expect(message.messageIntegrity == hexBytes("9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"))
        #expect(message.fingerprint == 0xE57A_3BCF)
        #expect(message.attributes.count == 6)
        #expect(message.unknownComprehensionRequired.isEmpty)
        #expect(message.checkIntegrity(key: Self.shortTermKey) == .valid(.sha1))
        #expect(message.checkIntegrity(key: Array("VOkJxbRl1RmTxUk/WvJxBu".utf8)) == .invalid)
        #expect(message.checkIntegrity(key: []) == .invalid)
    }

    @Test("re-encoding the sample request with space padding reproduces the vector byte for byte")
    func sampleRequestReencodes() throws {
        let bytes = try vector("rfc5769-2.1-request")
        let message = Message(
            type: MessageType(method: .binding, messageClass: .request), transactionID: sampleTransactionID,
            attributes: [
                .software("STUN test client"), .priority(0x6E00_01FF), .iceControlled(0x932F_F9B1_5126_3B36),
                .username("evtj:h6vY"),
            ])
        let integrity = MessageIntegrity(key: Self.shortTermKey)
        // The vector pads USERNAME with 0x20, and MESSAGE-INTEGRITY and FINGERPRINT cover the
        // padding, so only the (internal) space-padding option reproduces every byte.
        #expect(message.encode(integrity: integrity, fingerprint: true, padding: 0x20) == bytes)

        // With the zero padding RFC 8489 requires, only the three padding bytes and the
        // MESSAGE-INTEGRITY and FINGERPRINT values that cover them differ; the result verifies.
        let zeroPadded = message.encode(integrity: integrity, fingerprint: true)
        #expect(zeroPadded.count == bytes.count)
        let differing = (0..<bytes.count).filter { bytes[$0] != zeroPadded[$0] }
        let paddingBytes = 73..<76
        let macBytes = 80..<100
        let crcBytes = 104..<108
        #expect(differing.allSatisfy { paddingBytes.contains($0) || macBytes.contains($0) || crcBytes.contains($0) })
        #expect(Array(zeroPadded[paddingBytes]) == [0, 0, 0])
        let decoded = try Message.decode(zeroPadded)
        #expect(decoded.checkIntegrity(key: Self.shortTermKey) == .valid(.sha1))
        #expect(decoded.hasFingerprint)
        // Decoding the vector and re-encoding it (stale MI and FINGERPRINT are dropped and
        // recomputed) lands on the same bytes.
        let fromVector = try Message.decode(bytes)
        #expect(fromVector.encode(integrity: integrity, fingerprint: true, padding: 0x20) == bytes)
    }

    @Test("the IPv4 response yields 192.0.2.1:32853 and re-encodes to the vector")
    func ipv4Response() throws {
        let bytes = try vector("rfc5769-2.2-ipv4-response")
        let message = try Message.decode(bytes)
        #expect(message.type == MessageType(method: .binding, messageClass: .successResponse))
        #expect(message.transactionID == sampleTransactionID)
        #expect(message.software == "test vector")
        #expect(message.xorMappedAddress == SocketAddress("192.0.2.1:32853"))
        #expect(message.hasFingerprint)
        #expect(message.checkIntegrity(key: Self.shortTermKey) == .valid(.sha1))
        #expect(message.checkIntegrity(key: Array("wrong".utf8)) == .invalid)

        let built = Message(
            type: MessageType(method: .binding, messageClass: .successResponse), transactionID: sampleTransactionID,
            attributes: [.software("test vector"), .xorMappedAddress(SocketAddress(IPv4Address(192, 0, 2, 1), 32853))])
        #expect(built.encode(integrity: MessageIntegrity(key: Self.shortTermKey), fingerprint: true, padding: 0x20) == bytes)
    }

    @Test("the IPv6 response yields [2001:db8:1234:5678:11:2233:4455:6677]:32853 and re-encodes to the vector")
    func ipv6Response() throws {
        let bytes = try vector("rfc5769-2.3-ipv6-response")
        let message = try Message.decode(bytes)
        let expected = try #require(SocketAddress("[2001:db8:1234:5678:11:2233:4455:6677]:32853"))
        #expect(message.xorMappedAddress == expected)
        #expect(message.software == "test vector")
        #expect(message.hasFingerprint)
        #expect(message.checkIntegrity(key: Self.shortTermKey) == .valid(.sha1))
        #expect(message.checkIntegrity(key: Array("wrong".utf8)) == .invalid)

        let built = Message(
            type: MessageType(method: .binding, messageClass: .successResponse), transactionID: sampleTransactionID,
            attributes: [.software("test vector"), .xorMappedAddress(expected)])
        #expect(built.encode(integrity: MessageIntegrity(key: Self.shortTermKey), fingerprint: true, padding: 0x20) == bytes)
    }

    static let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"
    static let password = "The\u{00AD}M\u{00AA}tr\u{2168}"

    @Test("the long-term request verifies with MD5(username:realm:SASLprep(password)) and re-encodes exactly")
    func longTermRequest() throws {
        let bytes = try vector("rfc5769-2.4-long-term-request")
        let message = try Message.decode(bytes)
        #expect(message.transactionID == TransactionID(bytes: [0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e]))
        #expect(message.username == Self.username)
        #expect(message.nonce == "f//499k954d6OL34oL9FSTvy64sA")
        #expect(message.realm == "example.org")
        #expect(!message.hasFingerprint)

        #expect(SASLprep.prepare(Self.password) == "TheMatrIX")
        let key = LongTermCredentials.key(username: Self.username, realm: "example.org", password: Self.password)
        #expect(key == hexBytes("e8ca7ad59d5eb0518e312911d2dab2a9"))
        #expect(message.checkIntegrity(key: key) == .valid(.sha1))
        let wrong = LongTermCredentials.key(username: Self.username, realm: "example.org", password: "TheMatrix")
        #expect(message.checkIntegrity(key: wrong) == .invalid)

        // This vector pads with zeros, so the plain encoder reproduces it.
        let built = Message(
            type: MessageType(method: .binding, messageClass: .request), transactionID: message.transactionID,
            attributes: [.username(Self.username), .nonce("f//499k954d6OL34oL9FSTvy64sA"), .realm("example.org")])
        #expect(built.encode(integrity: MessageIntegrity(key: key)) == bytes)
    }
}
