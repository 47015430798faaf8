import FZCore
import STUN

extension TURNServer {
    /// RFC 8656 §10.2: a Send indication is relayed when the allocation, the permission and the
    /// peer rules all allow it; otherwise it is silently discarded (and counted). The DATA value
    /// goes to the peer in place, like a ChannelData payload.
    mutating func handleSend(peer: SocketAddress?, data: Range<Int>?, dontFragment: Bool,
                             unknownComprehensionRequired: Bool, tuple: FiveTuple, now: Timestamp) -> ClientAction {
        stats.sendIndicationsIn += 1
        guard let a = liveAllocation(tuple, now: now) else {
            stats.noAllocationDropped += 1
            return .none
        }
        guard !unknownComprehensionRequired, let peer, let data else {
            stats.malformedDropped += 1
            return .none
        }
        guard let from = a.relayed(for: peer.family) else {
            stats.unexpectedDropped += 1
            return .none
        }
        guard peerPolicy.permits(peer) else {
            stats.peerDenied += 1
            return .none
        }
        guard a.hasPermission(peer.ip, now: now) else {
            stats.noPermissionDropped += 1
            return .none
        }
        stats.relayedBytesToPeers += UInt64(data.count)
        return .forward(from: from, to: peer, payloadOffset: data.lowerBound, payloadLength: data.count,
                        dontFragment: a.dontFragment || dontFragment)
    }

    /// A Send indication the full decoder read (`bytes` are the datagram it came from).
    mutating func handleSend(_ m: Message, bytes: UnsafeRawBufferPointer, tuple: FiveTuple, now: Timestamp) -> ClientAction {
        handleSend(peer: m.xorPeerAddresses.first, data: m.data == nil ? nil : SendIndication.dataRange(inDecoded: bytes),
                   dontFragment: m.dontFragment, unknownComprehensionRequired: !m.unknownComprehensionRequired.isEmpty,
                   tuple: tuple, now: now)
    }

    /// RFC 8656 §12.5: ChannelData from a client goes to the channel's peer, payload in place.
    mutating func handleChannelData(_ bytes: UnsafeRawBufferPointer, tuple: FiveTuple, now: Timestamp) -> ClientAction {
        if let action = channelData(bytes, tuple: tuple, now: now) { return action }
        stats.channelDataIn += 1
        if ChannelData.parse(bytes) == nil { stats.malformedDropped += 1 } else { stats.noAllocationDropped += 1 }
        return .none
    }

    /// The data path of a shell that runs several servers (one per thread): a datagram that is
    /// ChannelData for an allocation this server holds is handled as `handleClient` would, with
    /// one lookup. nil (nothing counted) when it is not ChannelData or this server holds no
    /// allocation for the 5-tuple: the shell then finds the owner, or calls `handleClient`.
    public mutating func handleChannelDataIfHeld(_ bytes: UnsafeRawBufferPointer, from client: SocketAddress,
                                                 listener: SocketAddress, now: Timestamp) -> ClientAction? {
        guard PacketKind.classify(bytes) == .channelData else { return nil }
        return channelData(bytes, tuple: FiveTuple(client: client, listener: listener), now: now)
    }

    /// ChannelData handling; nil when there is no live allocation for `tuple` (not yet counted).
    private mutating func channelData(_ bytes: UnsafeRawBufferPointer, tuple: FiveTuple, now: Timestamp) -> ClientAction? {
        guard let a = allocations[tuple], a.expiresAt > now else { return nil }
        stats.channelDataIn += 1
        guard let (n, length) = ChannelData.parse(bytes) else {
            stats.malformedDropped += 1
            return ClientAction.none
        }
        guard let ch = a.channels[n], ch.expiresAt > now, let from = a.relayed(for: ch.peer.family) else {
            stats.unexpectedDropped += 1
            return ClientAction.none
        }
        guard a.hasPermission(ch.peer.ip, now: now) else {
            stats.noPermissionDropped += 1
            return ClientAction.none
        }
        stats.relayedBytesToPeers += UInt64(length)
        return .forward(from: from, to: ch.peer, payloadOffset: ChannelData.headerSize, payloadLength: length,
                        dontFragment: a.dontFragment)
    }

    /// RFC 8656 §11.3 / §12.6: a datagram from a peer reaches the client as ChannelData when a
    /// channel is bound to that peer, else as a Data indication — but only with a permission.
    public mutating func handlePeer(_ bytes: UnsafeRawBufferPointer, from peer: SocketAddress, relayed: SocketAddress,
                                    now: Timestamp) -> PeerAction {
        stats.peerPacketsIn += 1
        guard let t = byRelayed[relayed], let a = allocations[t], a.expiresAt > now else {
            stats.noAllocationDropped += 1
            return .none
        }
        guard a.hasPermission(peer.ip, now: now) else {
            stats.noPermissionDropped += 1
            return .none
        }
        if let n = a.channelByPeer[peer], let ch = a.channels[n], ch.expiresAt > now {
            stats.relayedBytesToClients += UInt64(bytes.count)
            if t.transport != .udp { return .streamChannelData(t, channel: n) }
            return .channelData(client: t.client, listener: t.listener, channel: n)
        }
        // A peer datagram near 64 KiB does not fit a STUN message with its header and
        // XOR-PEER-ADDRESS: without a channel it cannot be delivered. Nor can one whose
        // indication exceeds what the shell can send.
        guard let size = DataIndication.size(peer: peer, payloadLength: bytes.count), size <= config.maxDataIndicationSize
        else {
            stats.oversizeDropped += 1
            return .none
        }
        stats.relayedBytesToClients += UInt64(bytes.count)
        if t.transport != .udp { return .streamDataIndication(t, peer: peer) }
        return .dataIndication(client: t.client, listener: t.listener, peer: peer)
    }
}
