import FZCore
import Testing

@testable import STUN

@Suite("Strict decoding of malformed messages")
struct MalformedMessageTests {
    static let header = STUNDecodeError.Header(type: MessageType(method: .binding, messageClass: .request),
                                               transactionID: sampleTransactionID)

    func expectError(_ bytes: [UInt8], _ kind: STUNDecodeError.Kind, headerSet: Bool = true,
                     sourceLocation: SourceLocation = #_sourceLocation) {
        let error = decodeError(bytes)
        #expect(error?.kind == kind, sourceLocation: sourceLocation)
        #expect(error?.header == (headerSet ? Self.header : nil), sourceLocation: sourceLocation)
        // The same verdict through the pointer entry point.
        let viaPointer = bytes.withUnsafeBytes { p -> STUNDecodeError? in
            do throws(STUNDecodeError) {
                _ = try Message.decode(p)
                return nil
            } catch {
                return error
            }
        }
        #expect(viaPointer == error, sourceLocation: sourceLocation)
    }

    @Test("a minimal well-formed message decodes")
    func minimal() throws {
        let message = try Message.decode(rawMessage())
        #expect(message.attributes.isEmpty)
        #expect(message.checkIntegrity(key: []) == .absent)
    }

    @Test("garbage is not STUN and carries no header")
    func notSTUN() {
        expectError(rawMessage(cookie: 0x2112_A443), .notSTUN, headerSet: false)
        expectError(rawMessage(type: 0x4001), .notSTUN, headerSet: false)
        expectError(rawMessage(type: 0x8001), .notSTUN, headerSet: false)
        expectError([0xC0], .notSTUN, headerSet: false)
        expectError([0x00, 0x01, 0x00, 0x00, 0xDE, 0xAD, 0xBE, 0xEF], .notSTUN, headerSet: false)
        // A WireGuard handshake initiation: type 1, three zero bytes, a sender index.
        expectError([1, 0, 0, 0, 0x12, 0x34, 0x56, 0x78] + [UInt8](repeating: 0, count: 140), .notSTUN, headerSet: false)
    }

    @Test("fewer than 20 bytes are truncated")
    func shortHeader() {
        expectError([], .truncated, headerSet: false)
        expectError([0x00, 0x01], .truncated, headerSet: false)
        expectError(Array(rawMessage()[0..<19]), .truncated, headerSet: false)
    }

    @Test("a length that is not a multiple of four, or not the datagram's, is a bad length")
    func badLength() {
        expectError(rawMessage(length: 2) + [0, 0], .badLength, headerSet: false)
        expectError(rawMessage(attributes: [(0x8022, [0x41])], length: 5), .badLength, headerSet: false)
        expectError(rawMessage(length: 4), .badLength, headerSet: false)
        expectError(rawMessage() + [0, 0, 0, 0], .badLength, headerSet: false)
        expectError(rawMessage(attributes: [(0x0024, [0, 0, 0, 1])], length: 4), .badLength, headerSet: false)
    }

    @Test("an attribute running past the end, or missing its padding, is truncated")
    func truncatedAttribute() {
        // The TLV claims 8 bytes but the message holds 4.
        expectError(rawMessage(attributes: [(0x0024, [0, 0, 0, 1])]).patching(at: 23, to: 8), .truncated)
        // A 5-byte SOFTWARE as the last attribute without its padding: either the length field
        // disagrees with the datagram, or (below) the value overruns the declared length.
        let padded = rawMessage(attributes: [(0x8022, Array("hello".utf8))])
        expectError(Array(padded.dropLast(3)), .badLength, headerSet: false)
        let claimed = be16(0x0001) + be16(8) + be32(0x2112_A442) + sampleTransactionID.bytes
            + be16(0x8022) + be16(5) + Array("hell".utf8)
        expectError(claimed, .truncated)
    }

    @Test("addresses with an unknown family or a length that does not match it are rejected",
          arguments: [AttributeType.mappedAddress, AttributeType.xorMappedAddress, AttributeType.alternateServer,
                      AttributeType.xorPeerAddress, AttributeType.xorRelayedAddress])
    func badAddresses(type: UInt16) {
        expectError(rawMessage(attributes: [(type, [0, 3, 0, 80, 1, 2, 3, 4])]), .badAttribute(type: type))
        expectError(rawMessage(attributes: [(type, [0, 0, 0, 80, 1, 2, 3, 4])]), .badAttribute(type: type))
        expectError(rawMessage(attributes: [(type, [0, 1, 0, 80] + [UInt8](repeating: 0, count: 16))]),
                    .badAttribute(type: type))
        expectError(rawMessage(attributes: [(type, [0, 2, 0, 80, 1, 2, 3, 4])]), .badAttribute(type: type))
        expectError(rawMessage(attributes: [(type, [0, 1, 0])]), .badAttribute(type: type))
        expectError(rawMessage(attributes: [(type, [0, 1, 0, 80, 1, 2, 3, 4, 5])]), .badAttribute(type: type))
    }

    @Test("fixed-size attributes with the wrong length are rejected", arguments: [
        (AttributeType.messageIntegrity, [19, 21, 0, 32]),
        (AttributeType.messageIntegritySHA256, [0, 12, 15, 18, 33, 36]),
        (AttributeType.userhash, [0, 31, 33]),
        (AttributeType.fingerprint, [0, 3, 5, 8]),
        (AttributeType.channelNumber, [0, 2, 8]),
        (AttributeType.lifetime, [0, 3, 8]),
        (AttributeType.requestedAddressFamily, [0, 1, 8]),
        (AttributeType.additionalAddressFamily, [0, 1, 8]),
        (AttributeType.evenPort, [0, 2, 4]),
        (AttributeType.requestedTransport, [0, 1, 8]),
        (AttributeType.dontFragment, [1, 4]),
        (AttributeType.reservationToken, [0, 4, 12]),
        (AttributeType.icmp, [0, 4, 12]),
        (AttributeType.priority, [0, 8]),
        (AttributeType.useCandidate, [1, 4]),
        (AttributeType.iceControlled, [0, 4, 16]),
        (AttributeType.iceControlling, [0, 4, 16]),
        (AttributeType.errorCode, [0, 3]),
        (AttributeType.addressErrorCode, [0, 3]),
        (AttributeType.unknownAttributes, [1, 3, 5]),
        (AttributeType.passwordAlgorithm, [0, 2, 3]),
    ])
    func wrongFixedLengths(type: UInt16, lengths: [Int]) {
        for length in lengths {
            // 0x01 fills family bytes, keeping a family check from masking the length check.
            expectError(rawMessage(attributes: [(type, [UInt8](repeating: 0x01, count: length))]),
                        .badAttribute(type: type))
        }
    }

    @Test("families and error classes outside their ranges are rejected")
    func badRanges() throws {
        expectError(rawMessage(attributes: [(AttributeType.requestedAddressFamily, [3, 0, 0, 0])]),
                    .badAttribute(type: AttributeType.requestedAddressFamily))
        expectError(rawMessage(attributes: [(AttributeType.additionalAddressFamily, [0, 0, 0, 0])]),
                    .badAttribute(type: AttributeType.additionalAddressFamily))
        expectError(rawMessage(attributes: [(AttributeType.addressErrorCode, [3, 0, 4, 40])]),
                    .badAttribute(type: AttributeType.addressErrorCode))
        for (cls, number) in [(UInt8(2), UInt8(0)), (7, 0), (0, 0), (4, 100), (4, 255)] {
            expectError(rawMessage(attributes: [(AttributeType.errorCode, [0, 0, cls, number])]),
                        .badAttribute(type: AttributeType.errorCode))
        }
        // The 21 reserved bits are ignored.
        #expect(try Message.decode(rawMessage(attributes: [(AttributeType.errorCode, [0xFF, 0xFF, 0xFC, 38])]))
            .errorCode?.code == 438)
    }

    @Test("PASSWORD-ALGORITHM(S) parameters must fit their attribute")
    func passwordAlgorithmBounds() {
        expectError(rawMessage(attributes: [(AttributeType.passwordAlgorithm, [0, 1, 0, 4, 1, 2, 3])]),
                    .badAttribute(type: AttributeType.passwordAlgorithm))
        expectError(rawMessage(attributes: [(AttributeType.passwordAlgorithm, [0, 1, 0, 0, 0, 0, 0, 0])]),
                    .badAttribute(type: AttributeType.passwordAlgorithm))
        expectError(rawMessage(attributes: [(AttributeType.passwordAlgorithms, [0, 1, 0, 0, 0, 2])]),
                    .badAttribute(type: AttributeType.passwordAlgorithms))
        expectError(rawMessage(attributes: [(AttributeType.passwordAlgorithms, [0, 1, 0, 1, 9, 0, 2, 0, 0, 0])]),
                    .badAttribute(type: AttributeType.passwordAlgorithms))
    }

    static let invalidUTF8: [[UInt8]] = [
        [0xC3, 0x28],  // truncated two-byte sequence
        [0xC0, 0x80],  // overlong NUL
        [0xED, 0xA0, 0x80],  // UTF-16 surrogate
        [0xF4, 0x90, 0x80, 0x80],  // beyond U+10FFFF
        [0x61, 0xFF],
        [0xE3, 0x83],  // cut multibyte
    ]

    @Test("text attributes must be valid UTF-8 within 763 bytes",
          arguments: [AttributeType.username, AttributeType.realm, AttributeType.nonce, AttributeType.software])
    func text(type: UInt16) throws {
        for bad in Self.invalidUTF8 {
            expectError(rawMessage(attributes: [(type, bad)]), .badAttribute(type: type))
        }
        let longest = [UInt8](repeating: 0x61, count: 763)
        #expect(try Message.decode(rawMessage(attributes: [(type, longest)])).attributes.count == 1)
        expectError(rawMessage(attributes: [(type, longest + [0x61])]), .badAttribute(type: type))
        // Padding bytes are ignored, whatever they hold.
        #expect(try Message.decode(rawMessage(attributes: [(type, [0x61])], padding: 0xFF)).attributes.count == 1)
    }

    @Test("error reasons and ALTERNATE-DOMAIN are checked too")
    func otherText() {
        expectError(rawMessage(attributes: [(AttributeType.errorCode, [0, 0, 4, 0, 0xC3, 0x28])]),
                    .badAttribute(type: AttributeType.errorCode))
        expectError(rawMessage(attributes: [(AttributeType.alternateDomain, Array("tür.example".utf8))]),
                    .badAttribute(type: AttributeType.alternateDomain))
        expectError(rawMessage(attributes: [(AttributeType.alternateDomain, [UInt8](repeating: 0x61, count: 256))]),
                    .badAttribute(type: AttributeType.alternateDomain))
    }

    @Test("FINGERPRINT must be last")
    func fingerprintNotLast() throws {
        let good = Message(type: MessageType(method: .binding, messageClass: .request),
                           transactionID: sampleTransactionID, attributes: [.software("a")]).encode(fingerprint: true)
        // Append an attribute after FINGERPRINT and fix up the length.
        var bytes = good + be16(AttributeType.priority) + be16(4) + [0, 0, 0, 1]
        bytes.replaceSubrange(2..<4, with: be16(UInt16(bytes.count - 20)))
        expectError(bytes, .badAttribute(type: AttributeType.fingerprint))
        // Two FINGERPRINTs: the first is not last.
        var twice = good + Array(good[(good.count - 8)...])
        twice.replaceSubrange(2..<4, with: be16(UInt16(twice.count - 20)))
        expectError(twice, .badAttribute(type: AttributeType.fingerprint))
    }

    @Test("a wrong FINGERPRINT is reported with the header")
    func badFingerprint() throws {
        var bytes = Message(type: MessageType(method: .binding, messageClass: .request),
                            transactionID: sampleTransactionID, attributes: [.software("abc")]).encode(fingerprint: true)
        #expect(try Message.decode(bytes).hasFingerprint)
        bytes[bytes.count - 1] ^= 1
        expectError(bytes, .badFingerprint)
        // Flipping a covered byte breaks it too.
        var covered = Message(type: MessageType(method: .binding, messageClass: .request),
                              transactionID: sampleTransactionID, attributes: [.software("abc")]).encode(fingerprint: true)
        covered[24] ^= 0x20
        expectError(covered, .badFingerprint)
    }

    @Test("attributes after MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT")
    func afterIntegrity() throws {
        let key: [UInt8] = [9, 9, 9]
        let signed = Message(type: MessageType(method: .binding, messageClass: .request),
                             transactionID: sampleTransactionID, attributes: [.username("u")])
            .encode(integrity: MessageIntegrity(key: key))
        // Append PRIORITY, an unknown comprehension-required attribute and a malformed LIFETIME
        // after MESSAGE-INTEGRITY; they must be skipped, not returned or validated.
        var bytes = signed + be16(AttributeType.priority) + be16(4) + [0, 0, 0, 1]
            + be16(0x0003) + be16(0) + be16(AttributeType.lifetime) + be16(1) + [7, 0, 0, 0]
        bytes.replaceSubrange(2..<4, with: be16(UInt16(bytes.count - 20)))
        let message = try Message.decode(bytes)
        #expect(message.attributes.map(\.type) == [AttributeType.username, AttributeType.messageIntegrity])
        #expect(message.priority == nil)
        #expect(message.unknownComprehensionRequired.isEmpty)
        // MESSAGE-INTEGRITY's length covers only what precedes it, so it still verifies.
        #expect(message.checkIntegrity(key: key) == .valid(.sha1))
        // An attribute with a TLV running past the end is still an error, even there.
        var broken = signed + be16(AttributeType.priority) + be16(8) + [0, 0, 0, 1]
        broken.replaceSubrange(2..<4, with: be16(UInt16(broken.count - 20)))
        expectError(broken, .truncated)
    }

    @Test("after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT counts; SHA-256 wins over SHA-1")
    func afterIntegritySHA256() throws {
        let key: [UInt8] = Array("k".utf8)
        let base = Message(type: MessageType(method: .binding, messageClass: .request),
                           transactionID: sampleTransactionID, attributes: [.username("u")])
        // MESSAGE-INTEGRITY then MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6 allows both). The
        // encoder writes one, so splice the second by hand over [header|USERNAME|MI].
        let sha1Bytes = base.encode(integrity: MessageIntegrity(key: key))
        let miValue = try #require(try Message.decode(sha1Bytes).messageIntegrity)
        var bytes = sha1Bytes + be16(AttributeType.messageIntegritySHA256) + be16(32) + [UInt8](repeating: 0, count: 32)
        bytes.replaceSubrange(2..<4, with: be16(UInt16(bytes.count - 20)))
        let macOffset = sha1Bytes.count + 4
        bytes.withUnsafeMutableBytes { p in
            let header = [UInt8](UnsafeRawBufferPointer(rebasing: p[0..<20]))
            header.withUnsafeBytes { h in
                HMACComputer.mac(.sha256, key: key, header: h,
                                 body: UnsafeRawBufferPointer(rebasing: p[20..<sha1Bytes.count]),
                                 into: p.baseAddress! + macOffset)
            }
        }
        // Then a MESSAGE-INTEGRITY (ignored) and a FINGERPRINT (kept).
        bytes += be16(AttributeType.messageIntegrity) + be16(20) + [UInt8](repeating: 0, count: 20)
        bytes.replaceSubrange(2..<4, with: be16(UInt16(bytes.count + 8 - 20)))
        let crc = bytes.withUnsafeBytes { Fingerprint.value($0) }
        bytes += be16(AttributeType.fingerprint) + be16(4) + be32(crc)
        let message = try Message.decode(bytes)
        #expect(message.attributes.map(\.type) == [AttributeType.username, AttributeType.messageIntegrity,
                                                   AttributeType.messageIntegritySHA256, AttributeType.fingerprint])
        #expect(message.messageIntegrity == miValue)
        #expect(message.checkIntegrity(key: key) == .valid(.sha256))
        #expect(message.checkIntegrity(key: key + key) == .invalid)
    }

    @Test("a truncated MESSAGE-INTEGRITY-SHA256 is verified on its length")
    func truncatedSHA256() throws {
        let key: [UInt8] = [1]
        let full = Message(type: MessageType(method: .binding, messageClass: .request),
                           transactionID: sampleTransactionID, attributes: [.username("u")])
            .encode(integrity: MessageIntegrity(key: key, algorithm: .sha256))
        // Recompute with the length ending after a 16-byte MAC and keep its first 16 bytes.
        var bytes = Array(full[0..<(full.count - 16)])
        bytes.replaceSubrange(2..<4, with: be16(UInt16(bytes.count - 20)))
        let attrOffset = bytes.count - 20
        bytes.replaceSubrange((attrOffset + 2)..<(attrOffset + 4), with: be16(16))
        var mac = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBytes { p in
            mac.withUnsafeMutableBytes { out in
                HMACComputer.mac(.sha256, key: key, header: UnsafeRawBufferPointer(rebasing: p[0..<20]),
                                 body: UnsafeRawBufferPointer(rebasing: p[20..<attrOffset]), into: out.baseAddress!)
            }
        }
        bytes.replaceSubrange((attrOffset + 4)..<(attrOffset + 20), with: mac[0..<16])
        let message = try Message.decode(bytes)
        #expect(message.messageIntegritySHA256?.count == 16)
        #expect(message.checkIntegrity(key: key) == .valid(.sha256))
        #expect(message.checkIntegrity(key: [2]) == .invalid)
    }

    @Test("unknown comprehension-required attributes are listed once, optional ones not at all")
    func unknownComprehensionRequired() throws {
        let bytes = rawMessage(attributes: [
            (0x0003, [0, 0, 0, 4]), (0xC057, [1]), (0x0026, []), (0x0003, [0, 0, 0, 0]), (0x8fff, []),
            (AttributeType.software, Array("x".utf8)),
        ])
        let message = try Message.decode(bytes)
        #expect(message.unknownComprehensionRequired == [0x0003, 0x0026])
        #expect(message.attributes.count == 6)
        #expect(message.attributes[1] == .unknown(type: 0xC057, value: [1]))
    }

    @Test("an integrity check needs decoded bytes")
    func integrityOfBuiltMessage() {
        let built = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: .random(),
                            attributes: [.messageIntegrity([UInt8](repeating: 0, count: 20))])
        #expect(built.checkIntegrity(key: []) == .absent)
    }
}

extension Array where Element == UInt8 {
    func patching(at index: Int, to value: UInt8) -> [UInt8] {
        var copy = self
        copy[index] = value
        return copy
    }
}
