import FZCore

/// The receiving side of the MAC and cookie mechanism (whitepaper §5.3, §5.4.4, §5.4.7).
///
/// Every handshake message carries `mac1 = Mac(Hash("mac1----" ‖ Spub_receiver), msg_α)`, so a
/// responder can reject garbage before any Curve25519 work. Under load it also demands
/// `mac2 = Mac(τ, msg_β)` where the cookie `τ = Mac(R, source address)` proves the sender can
/// receive at its address; without it the responder answers only with a cookie reply, whose
/// secret `R` changes every two minutes.
struct CookieChecker: Sendable {
    static let secretLifetime: Duration = .seconds(120)

    /// `Hash("mac1----" ‖ our static public key)`.
    let mac1Key: [UInt8]
    /// `Hash("cookie--" ‖ our static public key)`: the XAEAD key of the replies we send.
    let encryptionKey: [UInt8]
    private var secret: SecretKey?
    private var secretCreatedAt: Timestamp = .zero

    init(localPublic: PublicKey) {
        mac1Key = localPublic.labelledKey(Noise.labelMAC1)
        encryptionKey = localPublic.labelledKey(Noise.labelCookie)
    }

    /// `mac1` of a handshake message of the given layout, compared in constant time.
    func hasValidMAC1(_ message: UnsafeRawBufferPointer, _ offsets: MACOffsets) -> Bool {
        Self.verify(key: mac1Key, covered: message.slice(0, offsets.mac1), mac: message.slice(offsets.mac1, 16))
    }

    /// `mac2` against the cookie we would give `source` now. False once the secret is older than
    /// two minutes: the sender then needs a fresh cookie anyway.
    func hasValidMAC2(_ message: UnsafeRawBufferPointer, _ offsets: MACOffsets, source: SocketAddress,
                      now: Timestamp) -> Bool {
        guard let secret, now - secretCreatedAt < Self.secretLifetime else { return false }
        var cookie = Self.cookie(secret: secret, source: source)
        defer { cookie.withUnsafeMutableBytes { Sodium.zero($0) } }
        return Self.verify(key: cookie, covered: message.slice(0, offsets.mac2), mac: message.slice(offsets.mac2, 16))
    }

    /// Writes the 64-byte cookie reply to `message` (whose sender index is `receiver`) into `out`.
    mutating func writeCookieReply(to message: UnsafeRawBufferPointer, _ offsets: MACOffsets, receiver: UInt32,
                                   source: SocketAddress, now: Timestamp, into out: UnsafeMutableRawBufferPointer) -> Int {
        typealias L = Layout.CookieReply
        // Copied first: `out` may be the message's own buffer, and the reply overwrites it.
        var ad = Array(message.slice(offsets.mac1, 16))
        defer { ad.withUnsafeMutableBytes { Sodium.zero($0) } }
        if secret == nil || now - secretCreatedAt >= Self.secretLifetime {
            secret = .random()
            secretCreatedAt = now
        }
        var cookie = Self.cookie(secret: secret!, source: source)
        defer { cookie.withUnsafeMutableBytes { Sodium.zero($0) } }
        out.storeHeader(.cookieReply)
        out.storeU32(receiver, at: L.receiver)
        let nonce = out.slice(L.nonce, Sodium.xNonceSize)
        Sodium.randomBytes(nonce)
        encryptionKey.withUnsafeBytes { key in
            cookie.withUnsafeBytes { plain in
                ad.withUnsafeBytes { a in
                    Sodium.xseal(key: key.baseAddress!, nonce: nonce.baseAddress!, plaintext: plain, ad: a,
                                 out: out.baseAddress! + L.encryptedCookie)
                }
            }
        }
        return L.size
    }

    /// `τ = Mac(R, A)` with `A` the source IP address bytes followed by the port (big-endian).
    /// Only this responder ever reads it back, so the encoding of `A` is a local choice.
    private static func cookie(secret: SecretKey, source: SocketAddress) -> [UInt8] {
        var address: [UInt8]
        switch source.ip {
        case .v4(let v4): address = (0..<4).map { UInt8(truncatingIfNeeded: v4.value >> (24 - 8 * $0)) }
        case .v6(let v6): address = v6.bytes
        }
        address.append(UInt8(source.port >> 8))
        address.append(UInt8(truncatingIfNeeded: source.port))
        var out = [UInt8](repeating: 0, count: KDF.macLength)
        secret.withRawBytes { k in
            address.withUnsafeBytes { a in out.withUnsafeMutableBytes { KDF.mac(key: k, a, into: $0) } }
        }
        return out
    }

    static func verify(key: [UInt8], covered: UnsafeRawBufferPointer, mac: UnsafeRawBufferPointer) -> Bool {
        withUnsafeTemporaryAllocation(byteCount: KDF.macLength, alignment: 8) { expected in
            key.withUnsafeBytes { KDF.mac(key: $0, covered, into: expected) }
            return Sodium.equal(UnsafeRawBufferPointer(expected), mac)
        }
    }
}

/// The sending side (§5.4.4): stamps `mac1` (and `mac2` while a cookie is fresh) on the handshake
/// messages we send to one peer, and takes the cookie out of the peer's cookie replies.
struct CookieJar: Sendable {
    /// A cookie is used for two minutes after it arrives.
    static let cookieLifetime: Duration = .seconds(120)

    /// `Hash("mac1----" ‖ peer's static public key)`.
    let mac1Key: [UInt8]
    /// `Hash("cookie--" ‖ peer's static public key)`.
    let decryptionKey: [UInt8]
    private(set) var cookie: [UInt8]?
    private var cookieReceivedAt: Timestamp = .zero
    /// The `mac1` of the last handshake message we sent: the cookie reply's associated data.
    private var lastMAC1: [UInt8]?

    init(peerPublic: PublicKey) {
        mac1Key = peerPublic.labelledKey(Noise.labelMAC1)
        decryptionKey = peerPublic.labelledKey(Noise.labelCookie)
    }

    func hasFreshCookie(now: Timestamp) -> Bool { cookie != nil && now - cookieReceivedAt < Self.cookieLifetime }

    /// Fills in `mac1` and `mac2` of a message whose other fields are written.
    mutating func stamp(_ message: UnsafeMutableRawBufferPointer, _ offsets: MACOffsets, now: Timestamp) {
        let covered1 = UnsafeRawBufferPointer(message.slice(0, offsets.mac1))
        mac1Key.withUnsafeBytes { KDF.mac(key: $0, covered1, into: message.slice(offsets.mac1, 16)) }
        lastMAC1 = Array(message.slice(offsets.mac1, 16))
        let mac2 = message.slice(offsets.mac2, 16)
        if let cookie, hasFreshCookie(now: now) {
            let covered2 = UnsafeRawBufferPointer(message.slice(0, offsets.mac2))
            cookie.withUnsafeBytes { KDF.mac(key: $0, covered2, into: mac2) }
        } else {
            mac2.initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// Decrypts a cookie reply (already matched to us by its receiver index). False when it does
    /// not authenticate against the last `mac1` we sent; each `mac1` can be answered once.
    mutating func consumeReply(_ reply: UnsafeRawBufferPointer, now: Timestamp) -> Bool {
        typealias L = Layout.CookieReply
        guard let ad = lastMAC1 else { return false }
        var plain = [UInt8](repeating: 0, count: KDF.macLength)
        let ok = plain.withUnsafeMutableBytes { p in
            decryptionKey.withUnsafeBytes { key in
                ad.withUnsafeBytes { a in
                    Sodium.xopen(key: key.baseAddress!, nonce: reply.baseAddress! + L.nonce,
                                 ciphertext: reply.slice(L.encryptedCookie, 32), ad: a, out: p.baseAddress!)
                }
            }
        }
        guard ok else { return false }
        cookie = plain
        cookieReceivedAt = now
        lastMAC1 = nil
        return true
    }
}
