import FZCore
import Testing

@testable import WireGuard

/// Whitepaper §5.4 primitives against published vectors.
@Suite("Cryptographic primitives (whitepaper §5.4) against published vectors")
struct CryptoVectorTests {
    static let kat32Key = [UInt8](0..<32)

    @Test("BLAKE2s-256 of \"abc\" matches RFC 7693 Appendix B")
    func rfc7693AppendixB() {
        #expect(BLAKE2s.hash(Array("abc".utf8)).hexString
                == "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
    }

    /// From the BLAKE2 reference package, `ref/blake2-kat.h` (github.com/BLAKE2/BLAKE2), table
    /// `blake2s_kat`: input is the bytes 00, 01, … of the given length, no key.
    @Test("unkeyed BLAKE2s matches the reference known-answer table", arguments: [
        (0, "69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9"),
        (1, "e34d74dbaf4ff4c6abd871cc220451d2ea2648846c7757fbaac82fe51ad64bea"),
    ])
    func unkeyedKAT(length: Int, expected: String) {
        #expect(BLAKE2s.hash((0..<length).map { UInt8($0) }).hexString == expected)
    }

    /// Same file, table `blake2s_keyed_kat`: key 00..1f, input 00, 01, … of the given length.
    /// Lengths around 64 cross the block boundary, where the last-block rule bites.
    @Test("keyed BLAKE2s matches the reference keyed known-answer table", arguments: [
        (0, "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49"),
        (1, "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1"),
        (2, "6bb71300644cd3991b26ccd4d274acd1adeab8b1d7914546c1198bbe9fc9d803"),
        (3, "1d220dbe2ee134661fdf6d9e74b41704710556f2f6e5a091b227697445dbea6b"),
        (32, "c03bc642b20959cbe133a0303e0c1abff3e31ec8e1a328ec8565c36decff5265"),
        (63, "c65382513f07460da39833cb666c5ed82e61b9e998f4b0c4287cee56c3cc9bcd"),
        (64, "8975b0577fd35566d750b362b0897a26c399136df07bababbde6203ff2954ed4"),
        (65, "21fe0ceb0052be7fb0f004187cacd7de67fa6eb0938d927677f2398c132317a8"),
        (255, "3fb735061abc519dfe979e54c1ee5bfad0a9d858b3315bad34bde999efd724dd"),
    ])
    func keyedKAT(length: Int, expected: String) {
        #expect(BLAKE2s.hash((0..<length).map { UInt8($0) }, key: Self.kat32Key).hexString == expected)
    }

    @Test("feeding BLAKE2s in pieces gives the one-shot digest at every split point")
    func incremental() {
        let input = (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let whole = BLAKE2s.hash(input, key: [1, 2, 3])
        for split in [0, 1, 63, 64, 65, 127, 128, 129, 200] {
            var state = BLAKE2s(key: [1, 2, 3])
            state.update(Array(input[0..<split]))
            state.update(Array(input[split...]))
            #expect(state.finalize() == whole, "split at \(split)")
        }
    }

    /// Computed independently with CPython's `hashlib.blake2s` (the reference C code), e.g.
    /// `hashlib.blake2s(b"", key=bytes(range(32)), digest_size=16).hexdigest()`.
    @Test("Mac, keyed BLAKE2s with a 16-byte output, matches CPython's hashlib")
    func mac() {
        #expect(BLAKE2s.hash([], key: Self.kat32Key, outputLength: 16).hexString == "9536f9b267655743dee97b8a670f9f53")
        #expect(BLAKE2s.hash(Array("abc".utf8), key: Array(0..<16), outputLength: 16).hexString
                == "75296c2d2c0f51210b383f386bc8b1ff")
        #expect(BLAKE2s.hash(Array("abc".utf8), outputLength: 1).hexString == "0d")
    }

    /// HMAC-BLAKE2s per RFC 2104, computed with CPython: `hmac.new(key, b"abc", hashlib.blake2s)`.
    /// A 100-byte key is longer than a block and is hashed first.
    @Test("Hmac is RFC 2104 HMAC over unkeyed BLAKE2s", arguments: [
        ([UInt8](0..<32), "82623be5bc0a391b24dce53e67d028eff92d586de0485ac37822e597d049c74f"),
        ([UInt8](0..<100), "c1b751501db12b753069a918627b623179be55c8cc7ca5c4e14bdf32274ac656"),
    ])
    func hmac(key: [UInt8], expected: String) {
        var out = [UInt8](repeating: 0, count: 32)
        key.withUnsafeBytes { k in
            Array("abc".utf8).withUnsafeBytes { d in out.withUnsafeMutableBytes { KDF.hmac(key: k, d, into: $0) } }
        }
        #expect(out.hexString == expected)
    }

    /// wireguard-go `device/kdf_test.go` (TestKDF): key, input, then τ1, τ2, τ3.
    @Test("Kdf1, Kdf2 and Kdf3 match wireguard-go's KDF test vectors", arguments: [
        ("746573742d6b6579", "746573742d696e707574",
         "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
         "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
         "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24"),
        ("776972656775617264", "776972656775617264",
         "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
         "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
         "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160"),
        ("", "",
         "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
         "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
         "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e"),
    ])
    func kdf(key: String, input: String, t1: String, t2: String, t3: String) {
        let (k, i) = (hex(key), hex(input))
        let three = KDF.kdf3(key: k, input: i)
        #expect([three.0, three.1, three.2].map { $0.bytes.hexString } == [t1, t2, t3])
        let two = KDF.kdf2(key: k, input: i)
        #expect([two.0, two.1].map { $0.bytes.hexString } == [t1, t2])
        #expect(KDF.kdf1(key: k, input: i).bytes.hexString == t1)
    }

    @Test("X25519 through libsodium matches RFC 7748 §6.1 in both directions")
    func x25519() throws {
        let alice = try #require(PrivateKey(bytes: hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")))
        let bob = try #require(PrivateKey(bytes: hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")))
        #expect(alice.publicKey.bytes.hexString == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        #expect(bob.publicKey.bytes.hexString == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        #expect(alice.sharedSecret(with: bob.publicKey)?.bytes.hexString == shared)
        #expect(bob.sharedSecret(with: alice.publicKey)?.bytes.hexString == shared)
    }

    @Test("a small-order public key gives no shared secret (the all-zero DH check)")
    func smallOrderPoint() throws {
        let key = PrivateKey.generate()
        // The identity point and the point of order 8 with u = 1 both yield an all-zero output.
        for point in [[UInt8](repeating: 0, count: 32), [1] + [UInt8](repeating: 0, count: 31)] {
            #expect(key.sharedSecret(with: try #require(PublicKey(bytes: point))) == nil)
        }
    }

    @Test("keys round-trip through the base64 form wg uses")
    func base64Keys() throws {
        let key = PrivateKey.generate()
        let again = try #require(PrivateKey(base64: key.base64))
        #expect(again.publicKey == key.publicKey)
        #expect(PublicKey(base64: key.publicKey.base64) == key.publicKey)
        #expect(key.publicKey.base64.count == 44)
        #expect(PublicKey(base64: "not base64!") == nil)
        #expect(PublicKey(base64: "AAAA") == nil)
    }

    @Test("the AEAD nonce is 32 zero bits and the little-endian counter: a sealed message opens only under its counter")
    func aeadNonce() {
        let key = SecretKey.random()
        let plaintext = Array("hello".utf8)
        var sealed = [UInt8](repeating: 0, count: plaintext.count + 16)
        plaintext.withUnsafeBytes { p in
            sealed.withUnsafeMutableBytes { o in
                Sodium.seal(key: key.pointer, counter: 0x0102_0304_0506_0708, plaintext: p.baseAddress, count: p.count,
                            ad: UnsafeRawBufferPointer(start: nil, count: 0), out: o.baseAddress!)
            }
        }
        func opens(_ counter: UInt64) -> Bool {
            var out = [UInt8](repeating: 0, count: plaintext.count)
            return sealed.withUnsafeBytes { c in
                out.withUnsafeMutableBytes { o in
                    Sodium.open(key: key.pointer, counter: counter, ciphertext: c.baseAddress!, count: c.count,
                                ad: UnsafeRawBufferPointer(start: nil, count: 0), out: o.baseAddress!)
                }
            }
        }
        #expect(opens(0x0102_0304_0506_0708))
        #expect(!opens(0x0807_0605_0403_0201))
        #expect(!opens(0))
    }

    @Test("TAI64N is 12 big-endian bytes from label 2^62 + 10, ordered by time, with nanoseconds hidden below 2^24")
    func tai64n() {
        let t = TAI64N(unixSeconds: 1, nanoseconds: 0x0102_0304)
        #expect(t.bytes == [0x40, 0, 0, 0, 0, 0, 0, 0x0B, 0x01, 0x02, 0x03, 0x04])
        #expect(TAI64N(bytes: t.bytes) == t)
        #expect(TAI64N(unixSeconds: 1, nanoseconds: 5) < TAI64N(unixSeconds: 1, nanoseconds: 6))
        #expect(TAI64N(unixSeconds: 1, nanoseconds: 999_999_999) < TAI64N(unixSeconds: 2, nanoseconds: 0))
        let clock = WallClock(anchor: TAI64N(unixSeconds: 100, nanoseconds: 900_000_000), at: .seconds(10))
        let later = clock.timestamp(at: .seconds(10.25))
        #expect(later.seconds == TAI64N.unixEpochLabel + 101)
        #expect(later.nanoseconds == 150_000_000 & ~0xFF_FFFF)
        #expect(clock.timestamp(at: .seconds(10)) < clock.timestamp(at: .seconds(10.02)))
    }
}
