import FZCrypto
import Testing

@Suite("Base64 and hex: strict, both variants")
struct EncodingTests {
    @Test("RFC 4648 §10 vectors encode and decode in the original variant")
    func rfc4648Vectors() {
        let vectors = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (plain, encoded) in vectors {
            #expect(Base64.encode(Array(plain.utf8)) == encoded)
            #expect(Base64.decode(encoded) == Array(plain.utf8))
        }
    }

    @Test("the URL-safe variant has no padding and uses - and _")
    func urlSafe() {
        let bytes: [UInt8] = [0xFB, 0xFF, 0xBF]
        #expect(Base64.encode(bytes) == "+/+/")
        #expect(Base64.encode(bytes, .urlSafeNoPadding) == "-_-_")
        #expect(Base64.decode("-_-_", .urlSafeNoPadding) == bytes)
        #expect(Base64.decode("+/+/", .urlSafeNoPadding) == nil)
        #expect(Base64.decode("Zg", .urlSafeNoPadding) == Array("f".utf8))
        #expect(Base64.decode("Zg==", .urlSafeNoPadding) == nil)
    }

    @Test("anything but exact base64 is refused: bad characters, padding, whitespace, trailing bits")
    func strictDecoding() {
        for bad in ["Zg=", "Zg", "Zm9v!", "Zm 9v", "Zm9v\n", "Zh==", "Zm9=", "====", "Z"] {
            #expect(Base64.decode(bad) == nil, "\(bad) must not decode")
        }
    }

    @Test("hex is lower case out and either case in; odd lengths and non-hex are refused")
    func hex() {
        #expect(Hex.encode([0x00, 0xAB, 0x7F]) == "00ab7f")
        #expect(Hex.decode("00aB7f") == [0x00, 0xAB, 0x7F])
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("zz") == nil)
        #expect(Hex.decode("") == [])
    }
}

@Suite("Digests and MACs")
struct DigestTests {
    @Test("SHA-256 of 'abc' (FIPS 180-2 appendix B.1)")
    func sha256() {
        #expect(Hex.encode(SHA256Digest.hash(Array("abc".utf8)))
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test("HMAC-SHA256, RFC 4231 test case 2, whole and in two parts")
    func hmacSHA256() {
        let key = Array("Jefe".utf8)
        let message = Array("what do ya want for nothing?".utf8)
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        #expect(Hex.encode(HMACSHA256.mac(key: key, message)) == expected)
        var out = [UInt8](repeating: 0, count: HMACSHA256.size)
        message.withUnsafeBytes { m in
            out.withUnsafeMutableBytes { o in
                HMACSHA256.mac(key: key, UnsafeRawBufferPointer(rebasing: m[0..<7]), UnsafeRawBufferPointer(rebasing: m[7...]),
                               into: o.baseAddress!)
            }
        }
        #expect(Hex.encode(out) == expected)
    }

    @Test("HMAC-SHA1, RFC 2202 test case 2, whole and in two parts")
    func hmacSHA1() {
        let key = Array("Jefe".utf8)
        let message = Array("what do ya want for nothing?".utf8)
        let expected = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        #expect(Hex.encode(HMACSHA1.mac(key: key, message)) == expected)
        var out = [UInt8](repeating: 0, count: HMACSHA1.size)
        message.withUnsafeBytes { m in
            out.withUnsafeMutableBytes { o in
                HMACSHA1.mac(key: key, UnsafeRawBufferPointer(rebasing: m[0..<3]), UnsafeRawBufferPointer(rebasing: m[3...]),
                             into: o.baseAddress!)
            }
        }
        #expect(Hex.encode(out) == expected)
    }

    @Test("MD5 of 'abc' (RFC 1321 §A.5)")
    func md5() {
        #expect(Hex.encode(MD5Digest.hash(Array("abc".utf8))) == "900150983cd24fb0d6963f7d28e17f72")
    }

    @Test("constant-time equality answers false for a different byte or length")
    func constantTime() {
        #expect(ConstantTime.equal([1, 2, 3], [1, 2, 3]))
        #expect(!ConstantTime.equal([1, 2, 3], [1, 2, 4]))
        #expect(!ConstantTime.equal([1, 2, 3], [1, 2]))
        #expect(ConstantTime.equal([], []))
    }

    @Test("random bytes differ between calls and fill the whole buffer")
    func random() {
        let a = SecureRandom.bytes(32), b = SecureRandom.bytes(32)
        #expect(a.count == 32 && a != b)
        #expect((0..<1000).allSatisfy { _ in SecureRandom.uniform(7) < 7 })
    }
}

@Suite("TURN REST credentials (coturn's scheme)")
struct TURNRESTCredentialTests {
    @Test("the password is base64(HMAC-SHA1(secret, username)), as coturn computes it")
    func vector() {
        // Computed independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        #expect(TURNRESTCredentials.password(secret: "secret", username: "1700000000:alice") == "d8soP47RbdIKLDUOpnJPVQyq5Ts=")
        let (u, p) = TURNRESTCredentials.mint(secret: "secret", name: "alice", expiry: 1_700_000_000)
        #expect(u == "1700000000:alice" && p == "d8soP47RbdIKLDUOpnJPVQyq5Ts=")
    }

    @Test("the expiry is the number before the first colon, or the whole username")
    func expiry() {
        #expect(TURNRESTCredentials.expiry(of: "1700000000:alice") == 1_700_000_000)
        #expect(TURNRESTCredentials.expiry(of: "1700000000:a:b") == 1_700_000_000)
        #expect(TURNRESTCredentials.expiry(of: "1700000000") == 1_700_000_000)
        #expect(TURNRESTCredentials.expiry(of: "alice") == nil)
        #expect(TURNRESTCredentials.expiry(of: ":alice") == nil)
    }
}
