import FZCore
import STUN

extension TURNClient {
    /// Handles one datagram that arrived on the client's socket from `source`. ChannelData and
    /// Data indications come back as `.data` (the payload's place in `bytes`); responses advance
    /// the state machine. Anything else is dropped and counted.
    public mutating func handle(datagram bytes: UnsafeRawBufferPointer, from source: SocketAddress,
                                now: Timestamp) -> TURNInput {
        guard source == config.server else {
            stats.foreignDropped += 1
            return .none
        }
        switch PacketKind.classify(bytes) {
        case .channelData:
            return unwrapChannelData(bytes)
        case .other:
            stats.malformedDropped += 1
            return .none
        case .stun:
            break
        }
        let message: Message
        do {
            message = try Message.decode(bytes)
        } catch {
            stats.malformedDropped += 1
            return .none
        }
        switch message.type.messageClass {
        case .indication:
            guard message.type.method == .data else {
                stats.unexpectedDropped += 1
                return .none
            }
            return unwrapDataIndication(message, bytes)
        case .request:
            stats.unexpectedDropped += 1
            return .none
        case .successResponse, .errorResponse:
            handleResponse(message, now: now)
            return .none
        }
    }

    /// Convenience for `[UInt8]` input.
    public mutating func handle(datagram bytes: [UInt8], from source: SocketAddress, now: Timestamp) -> TURNInput {
        bytes.withUnsafeBytes { handle(datagram: $0, from: source, now: now) }
    }

    // MARK: Data from peers

    mutating func unwrapChannelData(_ bytes: UnsafeRawBufferPointer) -> TURNInput {
        guard let (channel, length) = ChannelData.parse(bytes) else {
            stats.malformedDropped += 1
            return .none
        }
        // A channel whose ChannelBind is still in flight counts: the server only relays on a
        // number once it has bound it.
        guard let peer = channelPeers[channel] else {
            stats.unknownChannelDropped += 1
            return .none
        }
        stats.channelDataIn += 1
        return .data(peer: peer, payload: ChannelData.headerSize..<ChannelData.headerSize + length)
    }

    mutating func unwrapDataIndication(_ m: Message, _ bytes: UnsafeRawBufferPointer) -> TURNInput {
        // RFC 8656 §11.6: XOR-PEER-ADDRESS and DATA are required; without them it is discarded.
        guard let peer = m.xorPeerAddresses.first, let range = SendIndication.dataRange(inDecoded: bytes) else {
            stats.malformedDropped += 1
            return .none
        }
        stats.dataIndicationsIn += 1
        return .data(peer: peer, payload: range)
    }

    // MARK: Responses

    mutating func handleResponse(_ m: Message, now: Timestamp) {
        guard let p = pending[m.transactionID], p.kind.method == m.type.method else {
            stats.unmatchedDropped += 1
            return
        }
        let code = m.type.messageClass == .errorResponse ? m.errorCode?.code : nil
        if m.type.messageClass == .errorResponse, code == nil {
            stats.malformedDropped += 1
            return
        }
        // RFC 8489 §9.2.5: a response to a signed request must be signed with the same key,
        // except the answers a server gives before it has authenticated anything.
        let preAuth = code == 400 || code == 401 || code == 438
        switch (p.key.map { m.checkIntegrity(key: $0) }) {
        case .some(.valid):
            break
        case .some(.invalid):
            stats.unauthenticatedDropped += 1
            return
        case .some(.absent):
            guard preAuth else {
                stats.unauthenticatedDropped += 1
                return
            }
        case .none:
            // Sent unsigned: nothing to check against. Only an Allocate goes out unsigned, and
            // its only useful answer is the 401; a success to it would be unauthenticated.
            guard code != nil else {
                stats.unauthenticatedDropped += 1
                return
            }
        }
        pending[m.transactionID] = nil
        if let code {
            handleError(m, code: code, pending: p, now: now)
        } else {
            handleSuccess(m, pending: p, now: now)
        }
    }

    mutating func handleError(_ m: Message, code: Int, pending p: Pending, now: Timestamp) {
        switch code {
        case 401:
            stats.challenges += 1
            // A first 401 (or one after the server changed realm or nonce, as after a restart)
            // teaches the credentials context; a second one in a row means they are refused.
            guard p.challengeRetries == 0, learnChallenge(m) else {
                transactionFailed(p.kind, .unauthenticated, now: now)
                return
            }
            resend(p, now: now, stale: false)
        case 438:
            stats.staleNonces += 1
            guard p.staleRetries < config.maxStaleNonceRetries, let nonce = m.nonce, auth != nil else {
                transactionFailed(p.kind, .staleNonce, now: now)
                return
            }
            auth?.nonce = nonce
            if let realm = m.realm { auth?.realm = realm }
            resend(p, now: now, stale: true)
        case 437:
            if case .refresh(0) = p.kind {
                // Already gone: that is what was asked for.
                finishDeallocation()
                return
            }
            transactionFailed(p.kind, .allocationMismatch, now: now)
        default:
            transactionFailed(p.kind, .error(code: code), now: now)
        }
    }

    /// Takes REALM, NONCE and PASSWORD-ALGORITHMS from a 401 (RFC 8489 §9.2.4) and derives the
    /// key; false when the 401 lacks them.
    mutating func learnChallenge(_ m: Message) -> Bool {
        guard let realm = m.realm, let nonce = m.nonce else { return false }
        var offered: [PasswordAlgorithm]?
        var algorithm = PasswordAlgorithm.md5
        if let list = m.passwordAlgorithms, Self.nonceOffersPasswordAlgorithms(nonce) {
            offered = list
            if config.allowSHA256, list.contains(.sha256) {
                algorithm = .sha256
            } else if list.contains(.md5) {
                algorithm = .md5
            } else {
                return false  // nothing we can derive a key with
            }
        }
        let c = config.credentials
        let key = LongTermCredentials.key(username: c.username, realm: realm, password: c.password, algorithm: algorithm)
        auth = Auth(realm: realm, nonce: nonce, offered: offered, algorithm: algorithm, key: key,
                    integrity: algorithm == .sha256 ? .sha256 : .sha1)
        return true
    }

    /// RFC 8489 §9.2: `obMatJos2` then four base64 characters of security feature bits, bit 0
    /// (the most significant) being "password algorithms".
    static func nonceOffersPasswordAlgorithms(_ nonce: String) -> Bool {
        let u = Array(nonce.utf8)
        let cookie = Array("obMatJos2".utf8)
        guard u.count >= cookie.count + 4, Array(u[0..<cookie.count]) == cookie else { return false }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        guard let first = alphabet.firstIndex(of: u[cookie.count]) else { return false }
        return first & 0b10_0000 != 0
    }

    mutating func handleSuccess(_ m: Message, pending p: Pending, now: Timestamp) {
        switch p.kind {
        case .allocate:
            guard case .allocating = state, let relayed = m.xorRelayedAddresses.first, let l = m.lifetime else {
                stats.malformedDropped += 1
                transactionFailed(.allocate, .badResponse, now: now)
                return
            }
            let lifetime = Duration.seconds(Int64(l))
            grantedLifetimeSeconds = l
            state = .allocated(relayed: relayed, mapped: m.xorMappedAddress)
            allocationExpiresAt = now + lifetime
            allocationRefreshAt = now + config.refreshDelay(lifetime)
            events.append(.allocated(relayed: relayed, mapped: m.xorMappedAddress, lifetime: lifetime))
            installAll(now: now)
        case .refresh(let asked):
            if asked == 0 {
                finishDeallocation()
                return
            }
            guard case .allocated = state else { return }
            let granted = m.lifetime ?? asked
            grantedLifetimeSeconds = granted
            let lifetime = Duration.seconds(Int64(granted))
            allocationExpiresAt = now + lifetime
            allocationRefreshAt = now + config.refreshDelay(lifetime)
            events.append(.refreshed(lifetime: lifetime))
        case .createPermission(let ip):
            guard case .allocated = state, permissions[ip] != nil else { return }
            let first = permissions[ip]?.expiresAt == nil
            permissions[ip] = Installed(expiresAt: now + config.permissionLifetime,
                                        refreshAt: now + config.refreshDelay(config.permissionLifetime))
            if first { events.append(.permissionCreated(ip)) }
        case .channelBind(let peer, let n):
            guard case .allocated = state, channels[peer]?.number == n else { return }
            let first = channels[peer]?.state.expiresAt == nil
            channels[peer]?.state = Installed(expiresAt: now + config.channelLifetime,
                                              refreshAt: now + config.refreshDelay(config.channelLifetime))
            // RFC 8656 §12.2: the binding installed or refreshed the peer's permission too.
            if var perm = permissions[peer.ip], !perm.inFlight {
                let firstPermission = perm.expiresAt == nil
                perm.expiresAt = now + config.permissionLifetime
                perm.refreshAt = now + config.refreshDelay(config.permissionLifetime)
                permissions[peer.ip] = perm
                if firstPermission { events.append(.permissionCreated(peer.ip)) }
            }
            if first { events.append(.channelBound(peer: peer, channel: n)) }
        }
    }

    mutating func finishDeallocation() {
        guard case .deallocating = state else { return }
        pending.removeAll()
        state = .deallocated
        events.append(.deallocated)
    }
}
