import Testing

@testable import STUN

@Suite("SASLprep, long-term keys and fingerprints")
struct CredentialsTests {
    /// RFC 4013 §3 examples, plus the mappings the RFC 5769 / RFC 8489 vectors rely on.
    @Test("SASLprep follows the RFC 4013 examples", arguments: [
        ("I\u{00AD}X", "IX"),  // soft hyphen mapped to nothing
        ("user", "user"),
        ("USER", "USER"),  // case preserved
        ("\u{00AA}", "a"),  // NFKC
        ("\u{2168}", "IX"),  // NFKC
        ("a\u{00A0}b", "a b"),  // non-ASCII space mapped to space
        ("The\u{00AD}M\u{00AA}tr\u{2168}", "TheMatrIX"),
        ("", ""),
    ])
    func saslprep(input: String, output: String) {
        #expect(SASLprep.prepare(input) == output)
    }

    @Test("SASLprep rejects prohibited characters and bidi violations", arguments: [
        "\u{0007}",  // ASCII control
        "a\u{0000}b",  // NUL
        "\u{0627}\u{0031}",  // RandALCat not at both ends
        "\u{E000}",  // private use
        "a\u{FFFF}",  // non-character
    ])
    func saslprepRejects(input: String) {
        #expect(SASLprep.prepare(input) == nil)
    }

    @Test("long-term keys are MD5 or SHA-256 of user:realm:SASLprep(password)")
    func keys() {
        let md5 = LongTermCredentials.key(username: "user", realm: "realm", password: "pass")
        // MD5("user:realm:pass"), computed independently.
        #expect(hexString(md5) == "8493fbc53ba582fb4c044c456bdc40eb")
        let sha = LongTermCredentials.key(username: "user", realm: "realm", password: "pass", algorithm: .sha256)
        // SHA-256("user:realm:pass"), computed independently.
        #expect(hexString(sha) == "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b")
        #expect(LongTermCredentials.key(username: "user", realm: "realm", password: "pa\u{00AD}ss") == md5)
        // Unknown algorithms fall back to MD5.
        #expect(LongTermCredentials.key(username: "user", realm: "realm", password: "pass",
                                        algorithm: PasswordAlgorithm(id: 0x7777)) == md5)
    }

    @Test("CRC-32 matches the standard check value and FINGERPRINT XORs it with 0x5354554E")
    func crc() {
        let check = Array("123456789".utf8)
        #expect(check.withUnsafeBytes { Fingerprint.crc32($0) } == 0xCBF4_3926)
        #expect(check.withUnsafeBytes { Fingerprint.value($0) } == 0xCBF4_3926 ^ 0x5354_554E)
        #expect([UInt8]().withUnsafeBytes { Fingerprint.crc32($0) } == 0)
    }
}
