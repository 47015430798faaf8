import FZCore
import STUN

extension TURNServer {
    /// RFC 8656 §7.2, in the RFC's order of checks.
    mutating func handleAllocate(_ m: Message, tuple: FiveTuple, auth: AuthContext, now: Timestamp) -> ClientAction {
        if let existing = liveAllocation(tuple, now: now) {
            // A retransmitted Allocate gets the original answer; anything else is a mismatch.
            if existing.allocateTransaction == m.transactionID { return .reply(existing.allocateResponse) }
            return .reply(errorResponse(to: m, .allocationMismatch, auth: auth, tuple: tuple))
        }
        guard let transport = m.requestedTransport else {
            return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple))
        }
        guard transport == 17 else {  // UDP is the only relayed transport (TCP would be RFC 6062)
            return .reply(errorResponse(to: m, .unsupportedTransportProtocol, auth: auth, tuple: tuple))
        }
        let token = m.reservationToken
        let even = m.evenPort
        let requestedFamily = m.requestedAddressFamily
        let additionalFamily = m.additionalAddressFamily
        if token != nil && (even != nil || requestedFamily != nil || additionalFamily != nil) {
            return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple))
        }
        if requestedFamily != nil && additionalFamily != nil {
            return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple))
        }
        if even == true && additionalFamily != nil {
            return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple))
        }
        if additionalFamily == .v4 {
            return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple))
        }
        if config.userQuota > 0 && (perUser[auth.username] ?? 0) >= config.userQuota {
            return .reply(errorResponse(to: m, .allocationQuotaReached, auth: auth, tuple: tuple))
        }
        if config.totalQuota > 0 && allocations.count >= config.totalQuota {
            return .reply(errorResponse(to: m, .allocationQuotaReached, auth: auth, tuple: tuple))
        }

        guard sockets.admitAllocation(tuple, user: auth.username, userQuota: config.userQuota, totalQuota: config.totalQuota)
        else {
            return .reply(errorResponse(to: m, .allocationQuotaReached, auth: auth, tuple: tuple))
        }
        let admitted = (tuple, auth.username)
        var created = false
        defer { if !created { sockets.allocationEnded(admitted.0, user: admitted.1) } }

        let dontFragment = m.dontFragment
        var relayed: [SocketAddress] = []
        var extra: [Attribute] = []
        if let token {
            guard let r = reservations.removeValue(forKey: token) else {
                return .reply(errorResponse(to: m, .insufficientCapacity, auth: auth, tuple: tuple))
            }
            guard r.expiresAt > now else {
                sockets.closeRelay(at: r.address)
                releasePort(r.address)
                return .reply(errorResponse(to: m, .insufficientCapacity, auth: auth, tuple: tuple))
            }
            relayed = [r.address]  // its socket has been open since it was reserved
        } else if additionalFamily == .v6 {
            // Dual-stack allocation (RFC 8656 §7.2): both families, or one and ADDRESS-ERROR-CODE.
            for family in [AddressFamily.v4, .v6] {
                guard let ra = config.relayAddress(for: family) else {
                    extra.append(.addressErrorCode(family: family, .addressFamilyNotSupported))
                    continue
                }
                guard let a = openPort(on: ra.bind, even: false, reserveNext: false, dontFragment: dontFragment) else {
                    extra.append(.addressErrorCode(family: family, .insufficientCapacity))
                    continue
                }
                relayed.append(a.address)
            }
            if relayed.isEmpty {
                return .reply(errorResponse(to: m, .insufficientCapacity, auth: auth, tuple: tuple))
            }
        } else {
            let family = requestedFamily ?? .v4
            guard let ra = config.relayAddress(for: family) else {
                return .reply(errorResponse(to: m, .addressFamilyNotSupported, auth: auth, tuple: tuple))
            }
            guard let a = openPort(on: ra.bind, even: even != nil, reserveNext: even == true, dontFragment: dontFragment)
            else {
                return .reply(errorResponse(to: m, .insufficientCapacity, auth: auth, tuple: tuple))
            }
            relayed = [a.address]
            if let next = a.reserved {
                let t = UInt64.random(in: 1...UInt64.max, using: &rng)
                reservations[t] = Reservation(address: next, expiresAt: now + config.reservationLifetime)
                extra.append(.reservationToken(t))
            }
        }

        let lifetime = grantedLifetime(m.lifetime)
        var attrs: [Attribute] = relayed.map { .xorRelayedAddress(advertised($0)) }
        attrs.append(.lifetime(UInt32(lifetime.components.seconds)))
        attrs.append(contentsOf: extra)
        attrs.append(.xorMappedAddress(tuple.client))
        let response = success(to: m, attrs, auth: auth)
        allocations[tuple] = Allocation(
            fiveTuple: tuple, username: auth.username, relayed: relayed, expiresAt: now + lifetime,
            dontFragment: dontFragment, allocateTransaction: m.transactionID, allocateResponse: response)
        for r in relayed { byRelayed[r] = tuple }
        created = true
        perUser[auth.username, default: 0] += 1
        stats.allocationsCreated += 1
        events.append(.allocationCreated(tuple, username: auth.username, relayed: relayed, lifetime: lifetime))
        return .reply(response)
    }

    /// The address clients are told for a bound relayed address (`--external-ip`).
    func advertised(_ bound: SocketAddress) -> SocketAddress {
        let ra = config.relayAddresses.first { $0.bind == bound.ip }
        return SocketAddress(ip: ra?.advertised ?? bound.ip, port: bound.port)
    }

    /// Picks a random free port (even, and with its successor reserved, when asked), asks the
    /// shell to bind it, and tries other ports when the bind fails.
    mutating func openPort(on ip: IPAddress, even: Bool, reserveNext: Bool, dontFragment: Bool)
        -> (address: SocketAddress, reserved: SocketAddress?)?
    {
        guard pools[ip] != nil else { return nil }
        var failed: [UInt16] = []
        defer { for p in failed { pools[ip]?.release(p) } }
        for _ in 0..<config.portAttempts {
            let start = UInt16.random(in: config.portRange, using: &rng)
            guard let p = pools[ip]?.findFree(startingAt: start, even: even, pairFree: reserveNext) else { return nil }
            pools[ip]?.take(p)
            let address = SocketAddress(ip: ip, port: p)
            guard sockets.openRelay(at: address, dontFragment: dontFragment) else {
                failed.append(p)
                continue
            }
            guard reserveNext else { return (address, nil) }
            pools[ip]?.take(p + 1)
            let next = SocketAddress(ip: ip, port: p + 1)
            if sockets.openRelay(at: next, dontFragment: dontFragment) { return (address, next) }
            sockets.closeRelay(at: address)
            failed.append(p)
            failed.append(p + 1)
        }
        return nil
    }

    /// RFC 8656 §8.
    mutating func handleRefresh(_ m: Message, tuple: FiveTuple, allocation a: inout Allocation, auth: AuthContext,
                                now: Timestamp) -> ClientAction {
        if let family = m.requestedAddressFamily, a.relayed(for: family) == nil {
            return .reply(errorResponse(to: m, .peerAddressFamilyMismatch, auth: auth, tuple: tuple))
        }
        if m.lifetime == 0 {
            let response = success(to: m, [.lifetime(0)], auth: auth)
            deleteAllocation(tuple, reason: .refreshedToZero)
            return .reply(response)
        }
        let lifetime = grantedLifetime(m.lifetime)
        a.expiresAt = now + lifetime
        allocations[tuple] = a
        events.append(.allocationRefreshed(tuple, lifetime: lifetime))
        return .reply(success(to: m, [.lifetime(UInt32(lifetime.components.seconds))], auth: auth))
    }

    /// RFC 8656 §9.2: all peers are installed, or none.
    mutating func handleCreatePermission(_ m: Message, tuple: FiveTuple, allocation a: inout Allocation,
                                         auth: AuthContext, now: Timestamp) -> ClientAction {
        let peers = m.xorPeerAddresses
        guard !peers.isEmpty else { return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple)) }
        for p in peers where a.relayed(for: p.family) == nil {
            return .reply(errorResponse(to: m, .peerAddressFamilyMismatch, auth: auth, tuple: tuple))
        }
        for p in peers where !peerPolicy.permits(p.ip) {
            stats.peerDenied += 1
            return .reply(errorResponse(to: m, .forbidden, auth: auth, tuple: tuple))
        }
        let fresh = Set(peers.map(\.ip)).filter { a.permissions[$0] == nil }
        if a.permissions.count + fresh.count > config.maxPermissionsPerAllocation {
            return .reply(errorResponse(to: m, .insufficientCapacity, auth: auth, tuple: tuple))
        }
        for p in peers { a.permissions[p.ip] = now + config.permissionLifetime }
        stats.permissionsCreated += UInt64(fresh.count)
        allocations[tuple] = a
        return .reply(success(to: m, [], auth: auth))
    }

    /// RFC 8656 §11.2, with the §12 rule that an expired binding's number and peer stay out of
    /// other bindings during their cooldown.
    mutating func handleChannelBind(_ m: Message, tuple: FiveTuple, allocation a: inout Allocation,
                                    auth: AuthContext, now: Timestamp) -> ClientAction {
        guard let n = m.channelNumber, ChannelData.channelRange.contains(n), let peer = m.xorPeerAddresses.first
        else {
            return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple))
        }
        guard a.relayed(for: peer.family) != nil else {
            return .reply(errorResponse(to: m, .peerAddressFamilyMismatch, auth: auth, tuple: tuple))
        }
        guard peerPolicy.permits(peer) else {
            stats.peerDenied += 1
            return .reply(errorResponse(to: m, .forbidden, auth: auth, tuple: tuple))
        }
        if let bound = a.channels[n], bound.peer != peer {
            return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple))
        }
        if let other = a.channelByPeer[peer], other != n {
            return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple))
        }
        if let cooled = cooling[tuple] {
            if let c = cooled[n], c.peer != peer { return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple)) }
            if cooled.contains(where: { $0.key != n && $0.value.peer == peer }) {
                return .reply(errorResponse(to: m, .badRequest, auth: auth, tuple: tuple))
            }
        }
        if a.permissions[peer.ip] == nil && a.permissions.count >= config.maxPermissionsPerAllocation {
            return .reply(errorResponse(to: m, .insufficientCapacity, auth: auth, tuple: tuple))
        }
        if a.channels[n] == nil { stats.channelsBound += 1 }
        a.channels[n] = Channel(peer: peer, expiresAt: now + config.channelLifetime)
        a.channelByPeer[peer] = n
        a.permissions[peer.ip] = now + config.permissionLifetime
        cooling[tuple]?[n] = nil
        allocations[tuple] = a
        return .reply(success(to: m, [], auth: auth))
    }
}
