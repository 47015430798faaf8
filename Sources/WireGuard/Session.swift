import FZCore

/// One keypair (whitepaper §5.4.5) with its transport state (§5.4.6): the receiver index each
/// side chose, the send counter and the receive replay window.
///
/// Unsafe assumptions: `seal` and `open` are called only with buffers the caller (`Peer`) has
/// checked are large enough.
struct Session: Sendable {
    let localIndex: UInt32
    let remoteIndex: UInt32
    let sendKey: SecretKey
    let receiveKey: SecretKey
    let createdAt: Timestamp
    let isInitiator: Bool
    /// The counter the next sent message will carry.
    private(set) var sendCounter: UInt64 = 0
    private(set) var replay = ReplayWindow()

    init(localIndex: UInt32, remoteIndex: UInt32, keys: Noise.TransportKeys, createdAt: Timestamp, isInitiator: Bool) {
        self.localIndex = localIndex
        self.remoteIndex = remoteIndex
        sendKey = keys.send
        receiveKey = keys.receive
        self.createdAt = createdAt
        self.isInitiator = isInitiator
    }

    func age(at now: Timestamp) -> Duration { now - createdAt }

    /// Usable for sending: younger than REJECT_AFTER_TIME and below REJECT_AFTER_MESSAGES (§6.2).
    func canSend(at now: Timestamp, limits: Limits) -> Bool {
        age(at: now) < Constants.rejectAfterTime && sendCounter < limits.rejectAfterMessages
    }

    /// Usable for receiving: younger than REJECT_AFTER_TIME (§6.2).
    func canReceive(at now: Timestamp) -> Bool { age(at: now) < Constants.rejectAfterTime }

    /// Writes a transport message into `out`: the 16-byte header, then the first `paddedLength`
    /// bytes of `plaintext` followed by zeros (§5.4.6 padding), encrypted under the next counter.
    /// `plaintext` may already sit at `out[16...]`, in which case nothing is copied.
    mutating func seal(_ plaintext: UnsafeRawBufferPointer, paddedLength: Int, into out: UnsafeMutableRawBufferPointer) -> Int {
        typealias L = Layout.Transport
        let body = out.baseAddress! + L.payload
        if plaintext.count > 0, let source = plaintext.baseAddress, source != UnsafeRawPointer(body) {
            body.copyMemory(from: source, byteCount: plaintext.count)  // memmove: overlap allowed
        }
        if paddedLength > plaintext.count {
            (body + plaintext.count).initializeMemory(as: UInt8.self, repeating: 0, count: paddedLength - plaintext.count)
        }
        let counter = sendCounter
        sendCounter += 1
        out.storeHeader(.transport)
        out.storeU32(remoteIndex, at: L.receiver)
        out.storeU64(counter, at: L.counter)
        Sodium.seal(key: sendKey.pointer, counter: counter, plaintext: UnsafeRawPointer(body), count: paddedLength,
                    ad: UnsafeRawBufferPointer(start: nil, count: 0), out: body)
        return L.headerSize + paddedLength + Sodium.tagSize
    }

    /// Authenticates and decrypts a transport message into `out`, at the same offset (16) as the
    /// ciphertext, so `out` may be the datagram's own buffer. Returns the plaintext's range.
    /// The counter is not committed here: see `commit`.
    func open(_ datagram: UnsafeRawBufferPointer, counter: UInt64, into out: UnsafeMutableRawBufferPointer) -> Range<Int>? {
        typealias L = Layout.Transport
        let ciphertextLength = datagram.count - L.headerSize
        guard Sodium.open(key: receiveKey.pointer, counter: counter, ciphertext: datagram.baseAddress! + L.payload,
                          count: ciphertextLength, ad: UnsafeRawBufferPointer(start: nil, count: 0),
                          out: out.baseAddress! + L.payload)
        else { return nil }
        return L.payload..<(L.payload + ciphertextLength - Sodium.tagSize)
    }

    func mayAccept(_ counter: UInt64, limits: Limits) -> Bool {
        replay.isAcceptable(counter, limit: limits.rejectAfterMessages)
    }

    /// Records an authenticated counter in the replay window; false if it was a replay.
    mutating func commit(_ counter: UInt64, limits: Limits) -> Bool {
        replay.accept(counter, limit: limits.rejectAfterMessages)
    }
}
