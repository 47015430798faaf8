/// The handshake computations of Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it
/// (whitepaper §5.4.2-§5.4.5), with no state of their own: each step takes the previous step's
/// chaining key and hash and returns the next ones.
///
/// WireGuard is standard Noise IKpsk2 with the identifier as prologue, the TAI64N timestamp as
/// the initiation's payload and an empty response payload. The prologue and payloads are
/// parameters here so the same code can be checked against the Noise project's own test vectors.
enum Noise {
    static let construction = Array("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s".utf8)
    static let identifier = Array("WireGuard v1 zx2c4 Jason@zx2c4.com".utf8)
    static let labelMAC1 = Array("mac1----".utf8)
    static let labelCookie = Array("cookie--".utf8)

    /// Chaining key and hash before any message: `C = Hash(Construction)`,
    /// `H = Hash(C ‖ prologue)` (§5.4.2; Noise `InitializeSymmetric` + `MixHash(prologue)`).
    struct Start: Sendable {
        let chainingKey: [UInt8]
        let hash: [UInt8]

        init(prologue: [UInt8]) {
            chainingKey = KDF.hash(Noise.construction)
            hash = KDF.hash(chainingKey, prologue)
        }

        /// The WireGuard prologue: `Identifier`.
        static let wireGuard = Start(prologue: Noise.identifier)
    }

    /// What an initiator keeps between sending an initiation and receiving the response.
    struct InitiatorState: Sendable {
        let localIndex: UInt32
        let chainingKey: SecretKey
        let hash: [UInt8]
        let ephemeral: PrivateKey
    }

    /// A responder's state after decrypting the initiator's static key; enough to look the peer up.
    struct PartialInitiation: Sendable {
        let chainingKey: SecretKey
        let hash: [UInt8]
        let initiatorStatic: PublicKey
    }

    /// A fully authenticated initiation, ready to be answered.
    struct ConsumedInitiation: Sendable {
        let chainingKey: SecretKey
        let hash: [UInt8]
        let remoteEphemeral: PublicKey
        let remoteIndex: UInt32
        let payload: [UInt8]
    }

    /// Transport keys from `Kdf2(C, ε)` (§5.4.5), oriented for one side.
    struct TransportKeys: Sendable {
        let send: SecretKey
        let receive: SecretKey
        /// The final `H` (Noise's handshake hash); WireGuard does not use it further.
        let handshakeHash: [UInt8]
    }

    // MARK: Initiator, message 1 (§5.4.2)

    static func createInitiation(
        start: Start = .wireGuard, localStatic: PrivateKey, remoteStatic: PublicKey, staticShared: SecretKey,
        ephemeral: PrivateKey, localIndex: UInt32, payload: [UInt8]
    ) -> (InitiationFields, InitiatorState)? {
        var h = KDF.hash(start.hash, remoteStatic)
        // e: the ephemeral is hashed and, because of the psk modifier, mixed into the key.
        var c = KDF.kdf1(key: start.chainingKey, input: ephemeral.publicKey)
        h = KDF.hash(h, ephemeral.publicKey)
        // es
        guard let es = ephemeral.sharedSecret(with: remoteStatic) else { return nil }
        var (c2, k) = KDF.kdf2(key: c, input: es)
        c = c2
        let encryptedStatic = seal(key: k, localStatic.publicKey, ad: h)
        h = KDF.hash(h, encryptedStatic)
        // ss
        (c2, k) = KDF.kdf2(key: c, input: staticShared)
        c = c2
        let encryptedPayload = seal(key: k, payload, ad: h)
        h = KDF.hash(h, encryptedPayload)
        let fields = InitiationFields(sender: localIndex, ephemeral: ephemeral.publicKey,
                                      encryptedStatic: encryptedStatic, encryptedTimestamp: encryptedPayload)
        return (fields, InitiatorState(localIndex: localIndex, chainingKey: c, hash: h, ephemeral: ephemeral))
    }

    // MARK: Responder, message 1 (§5.4.2), in two steps

    /// Decrypts the initiator's static key with only our own static key, so a device can find the
    /// peer before doing anything peer-specific.
    static func beginConsumingInitiation(_ fields: InitiationFields, start: Start = .wireGuard,
                                         localStatic: PrivateKey) -> PartialInitiation? {
        var h = KDF.hash(start.hash, localStatic.publicKey)
        h = KDF.hash(h, fields.ephemeral)
        let c = KDF.kdf1(key: start.chainingKey, input: fields.ephemeral)
        guard let es = localStatic.sharedSecret(with: fields.ephemeral) else { return nil }
        let (c2, k) = KDF.kdf2(key: c, input: es)
        guard let staticBytes = open(key: k, fields.encryptedStatic, ad: h),
              let initiator = PublicKey(bytes: staticBytes)
        else { return nil }
        h = KDF.hash(h, fields.encryptedStatic)
        return PartialInitiation(chainingKey: c2, hash: h, initiatorStatic: initiator)
    }

    /// Authenticates the initiator through `ss` and decrypts the payload (the timestamp).
    static func finishConsumingInitiation(_ partial: PartialInitiation, _ fields: InitiationFields,
                                          staticShared: SecretKey) -> ConsumedInitiation? {
        let (c, k) = KDF.kdf2(key: partial.chainingKey, input: staticShared)
        guard let payload = open(key: k, fields.encryptedTimestamp, ad: partial.hash) else { return nil }
        let h = KDF.hash(partial.hash, fields.encryptedTimestamp)
        return ConsumedInitiation(chainingKey: c, hash: h, remoteEphemeral: fields.ephemeral,
                                  remoteIndex: fields.sender, payload: payload)
    }

    // MARK: Responder, message 2 (§5.4.3)

    static func createResponse(
        to initiation: ConsumedInitiation, remoteStatic: PublicKey, presharedKey: SecretKey,
        ephemeral: PrivateKey, localIndex: UInt32, payload: [UInt8] = []
    ) -> (ResponseFields, TransportKeys)? {
        var c = KDF.kdf1(key: initiation.chainingKey, input: ephemeral.publicKey)
        var h = KDF.hash(initiation.hash, ephemeral.publicKey)
        guard let ee = ephemeral.sharedSecret(with: initiation.remoteEphemeral),
              let se = ephemeral.sharedSecret(with: remoteStatic)
        else { return nil }
        c = KDF.kdf1(key: c, input: ee)
        c = KDF.kdf1(key: c, input: se)
        let (c2, tau, k) = KDF.kdf3(key: c, input: presharedKey)
        h = KDF.hash(h, tau)
        let encrypted = seal(key: k, payload, ad: h)
        h = KDF.hash(h, encrypted)
        // The responder receives with the first key and sends with the second.
        let (t1, t2) = KDF.kdf2(key: c2, input: [UInt8]())
        let fields = ResponseFields(sender: localIndex, receiver: initiation.remoteIndex,
                                    ephemeral: ephemeral.publicKey, encryptedNothing: encrypted)
        return (fields, TransportKeys(send: t2, receive: t1, handshakeHash: h))
    }

    // MARK: Initiator, message 2 (§5.4.3)

    /// Returns the transport keys and the response payload (empty in WireGuard).
    static func consumeResponse(_ fields: ResponseFields, state: InitiatorState, localStatic: PrivateKey,
                                presharedKey: SecretKey) -> (TransportKeys, [UInt8])? {
        var c = KDF.kdf1(key: state.chainingKey, input: fields.ephemeral)
        var h = KDF.hash(state.hash, fields.ephemeral)
        guard let ee = state.ephemeral.sharedSecret(with: fields.ephemeral),
              let se = localStatic.sharedSecret(with: fields.ephemeral)
        else { return nil }
        c = KDF.kdf1(key: c, input: ee)
        c = KDF.kdf1(key: c, input: se)
        let (c2, tau, k) = KDF.kdf3(key: c, input: presharedKey)
        h = KDF.hash(h, tau)
        guard let payload = open(key: k, fields.encryptedNothing, ad: h) else { return nil }
        h = KDF.hash(h, fields.encryptedNothing)
        let (t1, t2) = KDF.kdf2(key: c2, input: [UInt8]())
        return (TransportKeys(send: t1, receive: t2, handshakeHash: h), payload)
    }

    // MARK: AEAD with a zero counter, as every handshake message uses it

    static func seal(key: SecretKey, _ plaintext: some RawBytes, ad: [UInt8]) -> [UInt8] {
        plaintext.withRawBytes { p in
            var out = [UInt8](repeating: 0, count: p.count + Sodium.tagSize)
            out.withUnsafeMutableBytes { o in
                ad.withUnsafeBytes { a in
                    Sodium.seal(key: key.pointer, counter: 0, plaintext: p.baseAddress, count: p.count, ad: a,
                                out: o.baseAddress!)
                }
            }
            return out
        }
    }

    static func open(key: SecretKey, _ ciphertext: [UInt8], ad: [UInt8]) -> [UInt8]? {
        guard ciphertext.count >= Sodium.tagSize else { return nil }
        // One spare byte so the output pointer is valid even for an empty plaintext.
        var out = [UInt8](repeating: 0, count: ciphertext.count - Sodium.tagSize + 1)
        let ok = out.withUnsafeMutableBytes { o in
            ciphertext.withUnsafeBytes { c in
                ad.withUnsafeBytes { a in
                    Sodium.open(key: key.pointer, counter: 0, ciphertext: c.baseAddress!, count: c.count, ad: a,
                                out: o.baseAddress!)
                }
            }
        }
        guard ok else { return nil }
        out.removeLast()
        return out
    }
}

extension PublicKey {
    /// `Hash(label ‖ key)`: the MAC1 key (label "mac1----") and the cookie encryption key
    /// (label "cookie--") a message to this key's owner uses (§5.4.4, §5.4.7).
    func labelledKey(_ label: [UInt8]) -> [UInt8] { KDF.hash(label, self) }
}
