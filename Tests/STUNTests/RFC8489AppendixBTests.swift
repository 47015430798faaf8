import Testing

@testable import STUN

/// RFC 8489 Appendix B.1: long-term authentication with USERHASH, PASSWORD-ALGORITHM and
/// MESSAGE-INTEGRITY-SHA256.
///
/// The vector as published is inconsistent: its length field (0x9c) counts the header, it
/// omits the PASSWORD-ALGORITHM attribute that selecting the SHA-256 key requires, and its
/// MESSAGE-INTEGRITY-SHA256 (e4686c8f...) was computed over a header claiming that wrong length.
/// We follow verified erratum 6268 (https://www.rfc-editor.org/errata/eid6268), which fixes the
/// length to 0x90, adds PASSWORD-ALGORITHM = SHA-256 and gives MESSAGE-INTEGRITY-SHA256
/// b5c7bf00...8e65. What we verify against the corrected vector: USERHASH equals our
/// SHA-256(OpaqueString(user) ":" OpaqueString(realm)); NONCE, REALM and PASSWORD-ALGORITHM
/// decode; our HMAC-SHA256 with the key SHA-256(user ":" realm ":" "TheMatrIX") matches the
/// errata value (and an MD5-derived key does not); and re-encoding the message we build
/// reproduces all 164 bytes. Against the published vector we verify that a strict decoder
/// rejects its length, and that its MAC is exactly the HMAC over the 0x9c header.
@Suite("RFC 8489 Appendix B.1 (erratum 6268)")
struct RFC8489AppendixBTests {
    static let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"
    static let password = "The\u{00AD}M\u{00AA}tr\u{2168}"
    static let nonce = "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"
    static let transactionID = TransactionID(bytes: [0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e])

    @Test("the corrected vector decodes and its USERHASH is SHA-256 of user:realm")
    func decodesCorrectedVector() throws {
        let message = try Message.decode(try vector("rfc8489-B.1-errata6268"))
        #expect(message.type == MessageType(method: .binding, messageClass: .request))
        #expect(message.transactionID == Self.transactionID)
        let expectedUserhash = hexBytes("4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704")
        #expect(message.userhash == expectedUserhash)
        #expect(LongTermCredentials.userhash(username: Self.username, realm: "example.org") == expectedUserhash)
        #expect(message.nonce == Self.nonce)
        #expect(message.realm == "example.org")
        #expect(message.passwordAlgorithm == .sha256)
        #expect(message.username == nil)
        #expect(message.messageIntegritySHA256?.count == 32)
    }

    @Test("MESSAGE-INTEGRITY-SHA256 verifies with the SHA-256 long-term key and not with the MD5 one")
    func integrityVerifies() throws {
        let message = try Message.decode(try vector("rfc8489-B.1-errata6268"))
        let key = LongTermCredentials.key(username: Self.username, realm: "example.org", password: Self.password,
                                          algorithm: .sha256)
        #expect(key == hexBytes("dd295a613b9058c3c23d6dc7165bda072304d989c9d0af3a8c7e184b4f9bb4a1"))
        #expect(message.checkIntegrity(key: key) == .valid(.sha256))
        let md5Key = LongTermCredentials.key(username: Self.username, realm: "example.org", password: Self.password)
        #expect(message.checkIntegrity(key: md5Key) == .invalid)
    }

    @Test("re-encoding the message we build reproduces the corrected vector byte for byte")
    func reencodes() throws {
        let bytes = try vector("rfc8489-B.1-errata6268")
        let key = LongTermCredentials.key(username: Self.username, realm: "example.org", password: Self.password,
                                          algorithm: .sha256)
        let message = Message(
            type: MessageType(method: .binding, messageClass: .request), transactionID: Self.transactionID,
            attributes: [
                .userhash(LongTermCredentials.userhash(username: Self.username, realm: "example.org")),
                .nonce(Self.nonce), .realm("example.org"), .passwordAlgorithm(.sha256),
            ])
        #expect(message.encode(integrity: MessageIntegrity(key: key, algorithm: .sha256)) == bytes)
    }

    @Test("the vector as published is rejected for its length, and its MAC covers the wrong length")
    func publishedVector() throws {
        let published = try vector("rfc8489-B.1-as-published")
        let error = try #require(decodeError(published))
        #expect(error.kind == .badLength)
        #expect(error.header == nil)

        // With the length fixed to what the bytes hold (0x88) the message decodes, but the
        // published MAC does not verify: it is HMAC-SHA256 over the header claiming 0x9c.
        var fixed = published
        fixed[3] = 0x88
        let message = try Message.decode(fixed)
        let key = LongTermCredentials.key(username: Self.username, realm: "example.org", password: Self.password,
                                          algorithm: .sha256)
        #expect(message.checkIntegrity(key: key) == .invalid)

        let macOffset = published.count - 36
        var mac = [UInt8](repeating: 0, count: 32)
        published.withUnsafeBytes { p in
            mac.withUnsafeMutableBytes { out in
                HMACComputer.mac(.sha256, key: key, header: UnsafeRawBufferPointer(rebasing: p[0..<20]),
                                 body: UnsafeRawBufferPointer(rebasing: p[20..<macOffset]), into: out.baseAddress!)
            }
        }
        #expect(mac == Array(published[(macOffset + 4)...]))
    }
}
