import FZCore
import STUN

extension IceAgent {
    // MARK: Sending checks (RFC 8445 §7.2.2)

    /// PRIORITY of a check: what a peer-reflexive candidate learned from it would have (§7.1.1),
    /// the local preference of the pair's local candidate kept.
    func checkPriority(_ i: Int) -> UInt32 {
        let localPreference = UInt16(truncatingIfNeeded: pairs[i].local.priority >> 8)
        return Candidate.priority(kind: .peerReflexive, localPreference: localPreference)
    }

    mutating func sendCheck(_ i: Int, useCandidate: Bool, consent: Bool, now: Timestamp) {
        guard let remote = remoteCredentials else { return }
        let id = TransactionID.random()
        let priority = checkPriority(i)
        var attrs: [Attribute] = [
            .username("\(remote.ufrag):\(config.local.ufrag)"),
            .priority(priority),
            role == .controlling ? .iceControlling(config.tieBreaker) : .iceControlled(config.tieBreaker),
        ]
        if useCandidate && role == .controlling { attrs.append(.useCandidate) }
        if let s = config.software { attrs.append(.software(s)) }
        let bytes = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: id, attributes: attrs)
            .encode(integrity: MessageIntegrity(key: Array(remote.password.utf8)), fingerprint: true)
        pending[id] = Transaction(
            pair: i, bytes: bytes, transmissions: 1, sentAt: now,
            nextAt: now + (consent ? config.activeFailureTimeout * 2 : rto(after: 1)),
            useCandidate: useCandidate && role == .controlling, consent: consent, controlling: role == .controlling,
            priority: priority)
        if consent {
            stats.keepalivesSent += 1
        } else {
            stats.checksSent += 1
            pairs[i].checkInFlight = true
            if pairs[i].state != .succeeded { pairs[i].state = .inProgress }
        }
        transmits.append(IceTransmit(via: pairs[i].via, destination: pairs[i].remote.address, bytes: bytes))
    }

    // MARK: Inbound

    /// Hands the agent a datagram that arrived on `via` from `from`. Returns false when it is not
    /// STUN, not Binding (TURN responses belong to the TURN client), or STUN for another agent
    /// (another ufrag, an unknown transaction): the caller may offer it elsewhere. Malformed or
    /// unauthenticated STUN is consumed, dropped and counted.
    public mutating func handleInbound(_ bytes: UnsafeRawBufferPointer, from: SocketAddress, via: IceVia,
                                       now: Timestamp) -> Bool {
        guard PacketKind.classify(bytes) == .stun else { return false }
        let m: Message
        do {
            m = try Message.decode(bytes)
        } catch {
            if let h = error.header, h.type.method != .binding { return false }
            stats.malformedDropped += 1
            return true
        }
        guard m.type.method == .binding else { return false }
        switch m.type.messageClass {
        case .indication: return true  // RFC 8445 §11: keepalives need no answer
        case .request: return handleRequest(m, from: from, via: via, now: now)
        case .successResponse, .errorResponse: return handleResponse(m, from: from, via: via, now: now)
        }
    }

    public mutating func handleInbound(_ bytes: [UInt8], from: SocketAddress, via: IceVia, now: Timestamp) -> Bool {
        bytes.withUnsafeBytes { handleInbound($0, from: from, via: via, now: now) }
    }

    // MARK: Answering checks (RFC 8445 §7.3, RFC 8489 §9.1.3)

    mutating func respond(to m: Message, from: SocketAddress, via: IceVia, error code: ErrorCode?,
                          extra: [Attribute] = [], signed: Bool) {
        let type = MessageType(method: .binding, messageClass: code == nil ? .successResponse : .errorResponse)
        var attrs = extra
        if let code { attrs.insert(.errorCode(code), at: 0) } else { attrs.insert(.xorMappedAddress(from), at: 0) }
        if let s = config.software { attrs.append(.software(s)) }
        let integrity = signed ? MessageIntegrity(key: Array(config.local.password.utf8)) : nil
        let bytes = Message(type: type, transactionID: m.transactionID, attributes: attrs)
            .encode(integrity: integrity, fingerprint: true)
        if code == nil { stats.successResponsesSent += 1 } else { stats.errorResponsesSent += 1 }
        transmits.append(IceTransmit(via: via, destination: from, bytes: bytes))
    }

    mutating func handleRequest(_ m: Message, from: SocketAddress, via: IceVia, now: Timestamp) -> Bool {
        // §7.2.2: checks carry FINGERPRINT; without it this is not ICE traffic.
        guard m.hasFingerprint else {
            stats.malformedDropped += 1
            return true
        }
        guard let username = m.username, m.messageIntegrity != nil else {
            stats.badRequests += 1
            respond(to: m, from: from, via: via, error: .badRequest, signed: false)
            return true
        }
        // USERNAME is "our ufrag:their ufrag"; the first half picks the agent and the key.
        let ours = username.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)
        guard ours == config.local.ufrag else {
            stats.foreignDropped += 1
            return false
        }
        guard case .valid = m.checkIntegrity(key: Array(config.local.password.utf8)) else {
            stats.unauthenticatedDropped += 1
            respond(to: m, from: from, via: via, error: .unauthenticated, signed: false)
            return true
        }
        guard state != .failed else { return true }
        stats.requestsReceived += 1
        let unknown = m.unknownComprehensionRequired
        if !unknown.isEmpty {
            respond(to: m, from: from, via: via, error: .unknownAttribute, extra: [.unknownAttributes(unknown)], signed: true)
            return true
        }
        guard let priority = m.priority, m.iceControlling != nil || m.iceControlled != nil else {
            stats.badRequests += 1
            respond(to: m, from: from, via: via, error: .badRequest, signed: true)
            return true
        }
        // §7.3.1.1: role conflicts; the larger tie-breaker stays (or becomes) controlling.
        if role == .controlling, let theirs = m.iceControlling {
            stats.roleConflicts += 1
            if config.tieBreaker >= theirs {
                respond(to: m, from: from, via: via, error: .roleConflict, signed: true)
                return true
            }
            switchRole(to: .controlled, now: now)
        } else if role == .controlled, let theirs = m.iceControlled {
            stats.roleConflicts += 1
            if config.tieBreaker >= theirs {
                switchRole(to: .controlling, now: now)
            } else {
                respond(to: m, from: from, via: via, error: .roleConflict, signed: true)
                return true
            }
        }
        respond(to: m, from: from, via: via, error: nil, signed: true)

        // §7.3.1.3: an unknown source is a peer-reflexive remote candidate.
        guard pairingLocal(via) != nil else {
            stats.unknownBaseDropped += 1
            return true
        }
        var remote = remotes.first { $0.address == from }
        if remote == nil, remotes.count < config.maxRemoteCandidates {
            prflxCounter += 1
            let c = Candidate(foundation: "prflx\(prflxCounter)", priority: priority, address: from, kind: .peerReflexive)
            remotes.append(c)
            stats.peerReflexiveRemote += 1
            remote = c
        }
        guard let remote, let i = formPair(via: via, remote: remote, now: now) else { return true }
        startChecking(now: now)
        // §7.3.1.4: triggered check.
        switch pairs[i].state {
        case .succeeded, .inProgress:
            break
        case .waiting, .failed:
            pairs[i].state = .waiting
            pairs[i].retryAt = .distantFuture
            if !triggered.contains(i) { triggered.append(i) }
        }
        // §7.3.1.5: nomination.
        if role == .controlled, m.useCandidate {
            if pairs[i].state == .succeeded {
                markNominated(i, now: now)
            } else {
                pairs[i].nominateOnSuccess = true
            }
        }
        return true
    }

    // MARK: Responses to our checks (RFC 8445 §7.2.5)

    mutating func handleResponse(_ m: Message, from: SocketAddress, via: IceVia, now: Timestamp) -> Bool {
        guard let t = pending[m.transactionID] else {
            stats.unmatchedDropped += 1
            return false
        }
        guard let remote = remoteCredentials, case .valid = m.checkIntegrity(key: Array(remote.password.utf8)) else {
            stats.unauthenticatedDropped += 1
            return true  // keep retransmitting: a forged answer must not end the transaction
        }
        stats.responsesReceived += 1
        pending[m.transactionID] = nil
        let i = t.pair
        if !t.consent { pairs[i].checkInFlight = false }
        guard state != .failed else { return true }
        // §7.2.5.2.1: the answer must come back on the same 5-tuple.
        guard from == pairs[i].remote.address, via == pairs[i].via else {
            stats.asymmetricResponses += 1
            pairFailed(i, now: now)
            evaluate(now: now)
            return true
        }
        if m.type.messageClass == .errorResponse {
            if m.errorCode?.code == 487 {
                // §7.2.5.1: switch to the role the peer did not claim and check again.
                switchRole(to: t.controlling ? .controlled : .controlling, now: now)
                if pairs[i].state != .succeeded {
                    pairs[i].state = .waiting
                    if !triggered.contains(i) { triggered.append(i) }
                }
            } else if !t.consent {
                pairFailed(i, now: now)
            }
            evaluate(now: now)
            return true
        }
        guard let mapped = m.xorMappedAddress else {
            if !t.consent { pairFailed(i, now: now) }
            evaluate(now: now)
            return true
        }
        // §7.2.5.3.1: a mapped address we do not know is a peer-reflexive local candidate.
        if !locals.contains(where: { $0.candidate.address == mapped }), locals.count < 64 {
            locals.append(Local(candidate: Candidate(
                foundation: Candidate.foundation(.peerReflexive, base: pairs[i].via.address.ip, server: nil),
                priority: t.priority, address: mapped, kind: .peerReflexive, related: pairs[i].via.address), via: pairs[i].via))
            stats.peerReflexiveLocal += 1
        }
        let wasWorking = pairs[i].state == .succeeded
        pairs[i].state = .succeeded
        pairs[i].lastResponseAt = now
        // Karn: only an answer to a check sent once measures the round trip.
        if t.transmissions == 1 { pairs[i].rtt = now - t.sentAt }
        pairs[i].confirmations += 1
        pairs[i].retryAt = .distantFuture
        pairs[i].retryBackoff = config.retryInitial
        if !wasWorking, keepaliveInterval(i, now: now) == nil { pairs[i].nextKeepaliveAt = .distantFuture }
        if (t.useCandidate && role == .controlling && i == selected) || (pairs[i].nominateOnSuccess && role == .controlled) {
            markNominated(i, now: now)
        }
        evaluate(now: now)
        return true
    }
}
