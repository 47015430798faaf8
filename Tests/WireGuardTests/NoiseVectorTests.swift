import FZCore
import Testing

@testable import WireGuard

/// Known answers for the Noise construction (whitepaper §5.4.1-§5.4.5). No wireguard-go
/// handshake capture is available offline, so interop rests on two checks: the construction
/// constants against the values other implementations ship, and the whole IKpsk2 handshake
/// (with the prologue and payloads WireGuard replaces) against the Noise test vectors.
@Suite("Noise construction known answers (whitepaper §5.4)")
struct NoiseVectorTests {
    /// boringtun `boringtun/src/noise/handshake.rs`: `INITIAL_CHAIN_KEY` and `INITIAL_CHAIN_HASH`
    /// (given there as decimal byte arrays; these are the same bytes in hex). wireguard-go derives
    /// the same two values in `device/noise-protocol.go` (`InitialChainKey`, `InitialHash`).
    @Test("the initial chaining key and hash match boringtun's published constants")
    func constructionConstants() {
        let start = Noise.Start.wireGuard
        #expect(start.chainingKey.hexString == "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36")
        #expect(start.hash.hexString == "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3")
        #expect(String(decoding: Noise.construction, as: UTF8.self) == "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
        #expect(String(decoding: Noise.identifier, as: UTF8.self) == "WireGuard v1 zx2c4 Jason@zx2c4.com")
    }

    /// The cacophony test vector "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s", as shipped in
    /// mcginty/snow `tests/vectors/cacophony.txt`: prologue "John Galt", one PSK, fixed static
    /// and ephemeral keys, and six messages (two handshake messages, then transport both ways).
    /// WireGuard is this pattern with the identifier as prologue, the timestamp as first payload
    /// and an empty second payload, so the same functions must reproduce every byte.
    @Test("the IKpsk2 handshake and transport reproduce the Noise project's test vector byte for byte")
    func cacophonyIKpsk2() throws {
        let start = Noise.Start(prologue: hex("4a6f686e2047616c74"))
        let psk = try #require(SecretKey(bytes: hex("54686973206973206d7920417573747269616e20706572737065637469766521")))
        let initStatic = try #require(PrivateKey(bytes: hex("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1")))
        let initEphemeral = try #require(PrivateKey(bytes: hex("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a")))
        let respStatic = try #require(PrivateKey(bytes: hex("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893")))
        let respEphemeral = try #require(PrivateKey(bytes: hex("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b")))
        #expect(respStatic.publicKey.bytes.hexString == "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62")

        // Message 1: -> e, es, s, ss
        let payload1 = hex("4c756477696720766f6e204d69736573")
        let initShared = try #require(initStatic.sharedSecret(with: respStatic.publicKey))
        let (initiation, initiatorState) = try #require(Noise.createInitiation(
            start: start, localStatic: initStatic, remoteStatic: respStatic.publicKey, staticShared: initShared,
            ephemeral: initEphemeral, localIndex: 0, payload: payload1))
        let message1 = initiation.ephemeral.bytes + initiation.encryptedStatic + initiation.encryptedTimestamp
        #expect(message1.hexString == "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                + "001e21de9f98ddd8e2ad57527207feb56253c9c94a9e496782ecfcb2a75fbcaf1b52948cc48daefe660c62119ab50009"
                + "80c84831215f2441eba616548e832985464cf17e51ee93109008399a21f7e13f")

        let partial = try #require(Noise.beginConsumingInitiation(initiation, start: start, localStatic: respStatic))
        #expect(partial.initiatorStatic == initStatic.publicKey)
        let respShared = try #require(respStatic.sharedSecret(with: initStatic.publicKey))
        let consumed = try #require(Noise.finishConsumingInitiation(partial, initiation, staticShared: respShared))
        #expect(consumed.payload == payload1)

        // Message 2: <- e, ee, se, psk
        let payload2 = hex("4d757272617920526f746862617264")
        let (response, responderKeys) = try #require(Noise.createResponse(
            to: consumed, remoteStatic: initStatic.publicKey, presharedKey: psk, ephemeral: respEphemeral,
            localIndex: 0, payload: payload2))
        #expect((response.ephemeral.bytes + response.encryptedNothing).hexString
                == "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                + "cb765f2caef0751b8f007572dab0322217755c0632f365717edbf34d33e87a")
        let (initiatorKeys, received2) = try #require(Noise.consumeResponse(
            response, state: initiatorState, localStatic: initStatic, presharedKey: psk))
        #expect(received2 == payload2)
        // The vector's own `handshake_hash` field is not used: snow's vector runner ignores it,
        // and it is not the final `h` of the transcript. An independent computation of `h` with
        // CPython (hashlib.blake2s, hmac, and the `cryptography` package's X25519 and
        // ChaCha20Poly1305) gives this value, as does this code.
        #expect(initiatorKeys.handshakeHash.hexString == "f5191b875290abcd41347ac3622d9679688a7e980229cb937ef748336cfde0e5")
        #expect(responderKeys.handshakeHash == initiatorKeys.handshakeHash)

        // Messages 3-6: transport, initiator first, each side's counter starting at 0 (§5.4.6).
        var initiator = Session(localIndex: 1, remoteIndex: 2, keys: initiatorKeys, createdAt: .zero, isInitiator: true)
        var responder = Session(localIndex: 2, remoteIndex: 1, keys: responderKeys, createdAt: .zero, isInitiator: false)
        let transport: [(Bool, String, String)] = [
            (true, "462e20412e20486179656b", "8153ca9833bc3c1b91a7e66e5f4d4f5b59bf9e64c2f20d15f0bba7"),
            (false, "4361726c204d656e676572", "07af0c9c86e1b4e80f36b04ff7688d51141af3debd0332f0a705ef"),
            (true, "4a65616e2d426170746973746520536179", "6ab1467c0448cc78394494abaaf23afce0e234315d6e2624dcbfa8a21c1c4d073d"),
            (false, "457567656e2042f6686d20766f6e2042617765726b",
             "dfc346c0d2296ae6cf1acf6f12b8456a1dba228cf8d8b774aacf1c47fc53aa80ebc7a4c292"),
        ]
        for (index, (fromInitiator, payload, ciphertext)) in transport.enumerated() {
            let plain = hex(payload)
            var datagram = [UInt8](repeating: 0, count: 16 + plain.count + 16)
            let n = plain.withUnsafeBytes { p in
                datagram.withUnsafeMutableBytes { o in
                    fromInitiator ? initiator.seal(p, paddedLength: p.count, into: o)
                        : responder.seal(p, paddedLength: p.count, into: o)
                }
            }
            #expect(n == datagram.count)
            #expect(Array(datagram[16...]).hexString == ciphertext, "message \(index + 3)")
            #expect(datagram.withUnsafeBytes { $0.u64(at: 8) } == UInt64(index / 2), "counter of message \(index + 3)")
            var opened = [UInt8](repeating: 0, count: datagram.count)
            let receiver = fromInitiator ? responder : initiator
            let range = datagram.withUnsafeBytes { d in
                opened.withUnsafeMutableBytes { receiver.open(d, counter: UInt64(index / 2), into: $0) }
            }
            #expect(range.map { Array(opened[$0]) } == plain)
        }
    }
}
