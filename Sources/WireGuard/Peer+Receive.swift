import FZCore

extension Peer {
    /// Handles one datagram from `source`: a handshake message (answered in `out`), a cookie
    /// reply, or a transport message decrypted into `out`.
    ///
    /// `underLoad` (§5.3): handshake messages must then carry a valid MAC2; the others get a
    /// cookie reply and no further work. Anything malformed or unauthenticated is dropped and
    /// counted; no packet that failed authentication is ever returned.
    ///
    /// `out` may be the datagram's own buffer: handshake messages are parsed before anything is
    /// written, and a transport payload is decrypted at offset 16, where its ciphertext was.
    public mutating func decapsulate(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress,
                                     into out: UnsafeMutableRawBufferPointer, now: Timestamp,
                                     underLoad: Bool = false) -> DecapsulateResult {
        guard let type = MessageType.classify(datagram) else { return drop(.malformed) }
        switch type {
        case .initiation, .response:
            let offsets = MACOffsets.of(type)!
            guard checker.hasValidMAC1(datagram, offsets) else { return drop(.invalidMAC1) }
            if underLoad && !checker.hasValidMAC2(datagram, offsets, source: source, now: now) {
                guard out.count >= Layout.CookieReply.size else { return drop(.bufferTooSmall) }
                stats.cookieRepliesSent += 1
                return .cookieReply(checker.writeCookieReply(
                    to: datagram, offsets, receiver: datagram.u32(at: 4), source: source, now: now, into: out))
            }
            if type == .response { return receiveResponse(datagram, from: source, into: out, now: now) }
            let fields = InitiationFields(parsing: datagram)
            guard let partial = Noise.beginConsumingInitiation(fields, localStatic: localKey) else {
                return drop(.authenticationFailed)
            }
            guard partial.initiatorStatic == publicKey else { return drop(.unknownPeer) }
            return receiveInitiation(fields, partial, from: source, into: out, now: now)
        case .cookieReply:
            return receiveCookieReply(datagram, now: now)
        case .transport:
            return receiveTransport(datagram, from: source, into: out, now: now)
        }
    }

    public mutating func decapsulate(_ datagram: [UInt8], from source: SocketAddress, into out: inout [UInt8],
                                     now: Timestamp, underLoad: Bool = false) -> DecapsulateResult {
        datagram.withUnsafeBytes { d in
            out.withUnsafeMutableBytes { decapsulate(d, from: source, into: $0, now: now, underLoad: underLoad) }
        }
    }

    // MARK: Handshake messages (MACs already checked)

    /// §5.4.2-§5.4.3: an initiation whose static key is ours to answer.
    mutating func receiveInitiation(_ fields: InitiationFields, _ partial: Noise.PartialInitiation,
                                    from source: SocketAddress, into out: UnsafeMutableRawBufferPointer,
                                    now: Timestamp) -> DecapsulateResult {
        guard let staticShared else { return drop(.invalidPeerKey) }
        guard out.count >= Layout.Response.size else { return drop(.bufferTooSmall) }
        guard let consumed = Noise.finishConsumingInitiation(partial, fields, staticShared: staticShared),
              let timestamp = TAI64N(bytes: consumed.payload)
        else { return drop(.authenticationFailed) }
        // §5.1: an initiation is accepted only if its timestamp is newer than the last one, which
        // makes replaying a captured initiation useless.
        if let last = lastAcceptedTimestamp, timestamp <= last {
            return drop(.replayedInitiation)
        }
        if let at = lastInitiationConsumedAt, now - at < Constants.handshakeInitiationRate {
            return drop(.initiationFlood)
        }
        let index = allocateIndex()
        guard let (response, keys) = Noise.createResponse(
            to: consumed, remoteStatic: publicKey, presharedKey: presharedKey, ephemeral: .generate(), localIndex: index)
        else { return drop(.authenticationFailed) }
        lastAcceptedTimestamp = timestamp
        lastInitiationConsumedAt = now
        endpoint = source
        response.write(into: out)
        cookies.stamp(out, .response, now: now)
        // The responder may not send on the new session until the initiator has used it.
        next = Session(localIndex: index, remoteIndex: consumed.remoteIndex, keys: keys, createdAt: now,
                       isInitiator: false)
        previous = nil
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketReceived()
        timers.sessionDerived(now: now)
        timers.anyAuthenticatedPacketSent()
        return .handshakeResponse(Layout.Response.size)
    }

    /// §5.4.3: the answer to our initiation. The new session becomes current at once, and the
    /// first queued packet (or a keepalive) confirms it to the responder.
    mutating func receiveResponse(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress,
                                  into out: UnsafeMutableRawBufferPointer, now: Timestamp) -> DecapsulateResult {
        let fields = ResponseFields(parsing: datagram)
        guard let state = initiation, state.localIndex == fields.receiver else {
            return drop(owns(index: fields.receiver) ? .unexpected : .unknownReceiver)
        }
        guard out.count >= Layout.Transport.minimumSize else { return drop(.bufferTooSmall) }
        guard let (keys, _) = Noise.consumeResponse(fields, state: state, localStatic: localKey,
                                                    presharedKey: presharedKey)
        else { return drop(.authenticationFailed) }
        initiation = nil
        let session = Session(localIndex: state.localIndex, remoteIndex: fields.sender, keys: keys, createdAt: now,
                              isInitiator: true)
        // wireguard-go's rotation for the initiator: a pending `next` (from the peer's own
        // initiation) becomes `previous`, else the old current does.
        if next != nil {
            previous = next
            next = nil
        } else {
            previous = current
        }
        current = session
        endpoint = source
        lastHandshake = now
        stats.handshakesCompleted += 1
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketReceived()
        timers.sessionDerived(now: now)
        timers.handshakeComplete()
        if let n = nextQueuedDatagram(into: out, now: now) { return .handshakeCompleted(n) }
        return .handshakeCompleted(sealOnCurrent(UnsafeRawBufferPointer(start: nil, count: 0), into: out, now: now))
    }

    /// §5.4.7: a cookie reply to one of our handshake messages.
    mutating func receiveCookieReply(_ datagram: UnsafeRawBufferPointer, now: Timestamp) -> DecapsulateResult {
        guard owns(index: datagram.u32(at: Layout.CookieReply.receiver)) else {
            return drop(.unknownReceiver)
        }
        guard cookies.consumeReply(datagram, now: now) else { return drop(.authenticationFailed) }
        return .cookieAccepted
    }

    // MARK: Transport messages (§5.4.6)

    mutating func receiveTransport(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress,
                                   into out: UnsafeMutableRawBufferPointer, now: Timestamp) -> DecapsulateResult {
        let receiver = datagram.u32(at: Layout.Transport.receiver)
        let counter = datagram.u64(at: Layout.Transport.counter)
        let slot: SessionSlot
        if current?.localIndex == receiver { slot = .current }
        else if next?.localIndex == receiver { slot = .next }
        else if previous?.localIndex == receiver { slot = .previous }
        else { return drop(.unknownReceiver) }

        guard self[slot].canReceive(at: now) else { return drop(.sessionExpired) }
        guard counter < limits.rejectAfterMessages else { return drop(.counterExhausted) }
        guard self[slot].mayAccept(counter, limits: limits) else { return drop(.replayedCounter) }
        guard out.count >= datagram.count - Sodium.tagSize else { return drop(.bufferTooSmall) }
        guard let range = self[slot].open(datagram, counter: counter, into: out) else {
            return drop(.authenticationFailed)
        }
        // Only now, authenticated, may the counter move the window.
        guard commit(counter, in: slot) else { return drop(.replayedCounter) }

        endpoint = source
        if slot == .next {
            // The initiator has used the new session: it becomes current (wireguard-go's
            // ReceivedWithKeypair), and this is the responder's moment of handshake completion.
            previous = current
            current = next
            next = nil
            lastHandshake = now
            stats.handshakesCompleted += 1
            timers.handshakeComplete()
        }
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketReceived()
        keepKeyFreshReceiving(now: now)

        if range.isEmpty {
            stats.keepalivesReceived += 1
            return .keepalive
        }
        guard let length = Self.innerPacketLength(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(out)[range])) else {
            return drop(.malformed)
        }
        timers.dataReceived(now: now)
        stats.packetsReceived += 1
        stats.bytesReceived += UInt64(datagram.count)
        return .packet(range.lowerBound..<(range.lowerBound + length))
    }

    /// §6.2: an initiator whose session nears REJECT_AFTER_TIME − KEEPALIVE_TIMEOUT −
    /// REKEY_TIMEOUT while data still arrives rekeys once, so the session does not die mid-use.
    private mutating func keepKeyFreshReceiving(now: Timestamp) {
        guard !timers.sentLastMinuteHandshake, let session = current, session.isInitiator,
              session.age(at: now) >= Constants.rejectAfterTime - Constants.keepaliveTimeout - Constants.rekeyTimeout
        else { return }
        timers.sentLastMinuteHandshake = true
        timers.requestHandshake(now: now)
    }

    /// The length an IPv4 or IPv6 header declares, if it fits the decrypted bytes; the rest is
    /// padding (§5.4.6). Anything else was not an IP packet and is dropped, as wireguard-go does.
    static func innerPacketLength(_ packet: UnsafeRawBufferPointer) -> Int? {
        guard let first = packet.first else { return nil }
        switch first >> 4 {
        case 4:
            guard packet.count >= 20 else { return nil }
            let total = Int(packet[2]) << 8 | Int(packet[3])
            return total >= 20 && total <= packet.count ? total : nil
        case 6:
            guard packet.count >= 40 else { return nil }
            let total = 40 + (Int(packet[4]) << 8 | Int(packet[5]))
            return total <= packet.count ? total : nil
        default:
            return nil
        }
    }

    // MARK: Session slots

    enum SessionSlot { case current, previous, next }

    /// Read access to an occupied slot.
    subscript(slot: SessionSlot) -> Session {
        switch slot {
        case .current: current!
        case .previous: previous!
        case .next: next!
        }
    }

    /// Mutates the slot in place, so the replay window's storage is never copied.
    private mutating func commit(_ counter: UInt64, in slot: SessionSlot) -> Bool {
        switch slot {
        case .current: current!.commit(counter, limits: limits)
        case .previous: previous!.commit(counter, limits: limits)
        case .next: next!.commit(counter, limits: limits)
        }
    }
}
