import FZCore
import WireGuard

/// Where a peer's datagrams go. The owner of the connection decides (the connectivity engine,
/// after ICE nominated a pair), not WireGuard's roaming — except in the static-peer mode.
public enum PeerPath: Sendable, Hashable, CustomStringConvertible {
    /// wg-quick semantics: wherever the peer's last authenticated datagram came from (§2.1), or
    /// its configured endpoint.
    case roaming
    /// Straight to this address (a host, server-reflexive or peer-reflexive candidate).
    case direct(SocketAddress)
    /// Through a TURN relay: each datagram goes to `relay` as ChannelData on `channel` (a 4-byte
    /// header in front, written into the headroom the data plane keeps), and ChannelData from
    /// `relay` on `channel` is this peer's.
    case relayed(relay: SocketAddress, channel: UInt16)

    public var description: String {
        switch self {
        case .roaming: "roaming"
        case .direct(let address): "direct \(address)"
        case .relayed(let relay, let channel): "relayed \(relay) channel 0x\(String(channel, radix: 16))"
        }
    }
}

/// The pure state of a tunnel with many peers that come and go: the WireGuard `Device`, the
/// cryptokey routing table, and per peer its prefixes, path and packet filter. The I/O shell
/// (`FZTunnel.DataPlane`) asks it where an outgoing packet goes, whether a decrypted one may be
/// delivered, and which peer an inbound ChannelData belongs to; the control side changes it.
///
/// Every change is incremental: adding or removing a peer touches that peer's prefixes and its
/// channel binding, never a rebuild of the tables, and the device keeps its timer schedule.
public struct TunnelState: Sendable {
    public var device: Device
    public private(set) var allowedIPs = AllowedIPs<PeerID>()

    struct Slot: Sendable {
        var prefixes: [CIDR]
        var path: PeerPath
        var filter: PacketFilter
    }

    struct ChannelKey: Hashable, Sendable {
        var relay: SocketAddress
        var channel: UInt16
    }

    private var slots: [Slot?] = []
    private var channels: [ChannelKey: PeerID] = [:]

    public init(device: Device) { self.device = device }

    public var peerCount: Int { slots.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }

    // MARK: changes (the control side)

    /// Adds a peer with its prefixes, path and filter; nil if the device refuses it (its key is
    /// already configured, or is the device's own). A prefix another peer has moves to this one.
    @discardableResult
    public mutating func addPeer(_ configuration: PeerConfiguration, allowedIPs prefixes: [CIDR],
                                 path: PeerPath = .roaming, filter: PacketFilter = .allowAll) -> PeerID? {
        guard let id = device.addPeer(configuration) else { return nil }
        let index = Int(id.slot)
        if index >= slots.count { slots.append(contentsOf: repeatElement(nil, count: index + 1 - slots.count)) }
        slots[index] = Slot(prefixes: [], path: .roaming, filter: filter)
        setAllowedIPs(prefixes, of: id)
        setPath(path, of: id)
        return id
    }

    /// Removes a peer: its prefixes (those still its own), its channel binding, its sessions.
    /// Packets queued for it and datagrams still in flight for it are dropped from now on.
    public mutating func removePeer(_ id: PeerID) {
        guard let slot = slot(id) else { return }
        for prefix in slot.prefixes where allowedIPs.value(at: prefix) == id { allowedIPs.remove(prefix) }
        if case .relayed(let relay, let channel) = slot.path { channels[ChannelKey(relay: relay, channel: channel)] = nil }
        slots[Int(id.slot)] = nil
        device.removePeer(id)
    }

    /// Replaces a peer's prefixes with `prefixes`: removes the ones it no longer has and inserts
    /// the new ones (a prefix another peer has moves to this one, as `wg set` does).
    public mutating func setAllowedIPs(_ prefixes: [CIDR], of id: PeerID) {
        guard var slot = slot(id) else { return }
        let wanted = Set(prefixes)
        for prefix in slot.prefixes where !wanted.contains(prefix) && allowedIPs.value(at: prefix) == id {
            allowedIPs.remove(prefix)
        }
        var kept: [CIDR] = []
        for prefix in prefixes where !kept.contains(prefix) {
            if let owner = allowedIPs.value(at: prefix), owner != id { slots[Int(owner.slot)]?.prefixes.removeAll { $0 == prefix } }
            allowedIPs.insert(prefix, id)
            kept.append(prefix)
        }
        slot.prefixes = kept
        slots[Int(id.slot)] = slot
    }

    /// Sets where the peer's datagrams go. A relayed path also claims (relay, channel) for
    /// inbound ChannelData; a channel another peer had is taken from it (it loses its path).
    public mutating func setPath(_ path: PeerPath, of id: PeerID) {
        guard var slot = slot(id) else { return }
        if case .relayed(let relay, let channel) = slot.path { channels[ChannelKey(relay: relay, channel: channel)] = nil }
        if case .relayed(let relay, let channel) = path {
            let key = ChannelKey(relay: relay, channel: channel)
            if let previous = channels[key], previous != id { slots[Int(previous.slot)]?.path = .roaming }
            channels[key] = id
        }
        slot.path = path
        slots[Int(id.slot)] = slot
    }

    public mutating func setFilter(_ filter: PacketFilter, of id: PeerID) {
        guard Int(id.slot) < slots.count else { return }
        slots[Int(id.slot)]?.filter = filter
    }

    // MARK: queries

    public func allowedIPs(of id: PeerID) -> [CIDR] { slot(id)?.prefixes ?? [] }
    public func path(of id: PeerID) -> PeerPath? { slot(id)?.path }
    public func filter(of id: PeerID) -> PacketFilter? { slot(id)?.filter }

    public enum Routing: Equatable, Sendable {
        case peer(PeerID)
        /// The destination is in no peer's AllowedIPs.
        case noRoute
        /// Too short, or not IPv4/IPv6.
        case malformed
    }

    /// The peer an outgoing packet goes to, by its destination (longest prefix).
    @inline(__always)
    public func route(_ packet: UnsafeRawBufferPointer) -> Routing {
        guard packet.count >= 1 else { return .malformed }
        let peer: PeerID?
        switch packet[0] >> 4 {
        case 4 where packet.count >= 20:
            peer = allowedIPs.lookup(v4: packet.be32(16))
        case 6 where packet.count >= 40:
            peer = allowedIPs.lookup(v6High: packet.be64(24), low: packet.be64(32))
        default:
            return .malformed
        }
        return peer.map(Routing.peer) ?? .noRoute
    }

    public enum Admission: Equatable, Sendable {
        case deliver
        /// The inner source is not in the sending peer's AllowedIPs (whitepaper §2).
        case sourceNotAllowed
        /// The peer's packet filter refuses the destination, protocol or port.
        case filtered
        case malformed
    }

    /// Whether a packet `peer` sent (decrypted) may be delivered: its source must route back to
    /// that same peer, and its destination must pass that peer's filter.
    @inline(__always)
    public func admit(_ packet: UnsafeRawBufferPointer, from peer: PeerID) -> Admission {
        let owner: PeerID?
        switch packet.count >= 1 ? packet[0] >> 4 : 0 {
        case 4 where packet.count >= 20:
            owner = allowedIPs.lookup(v4: packet.be32(12))
        case 6 where packet.count >= 40:
            owner = allowedIPs.lookup(v6High: packet.be64(8), low: packet.be64(16))
        default:
            return .malformed
        }
        guard owner == peer else { return .sourceNotAllowed }
        let index = Int(peer.slot)
        let verdict = slots.withUnsafeBufferPointer { index < $0.count ? $0[index]?.filter.evaluate(packet) : nil }
        switch verdict {
        case .allow: return .deliver
        case .deny, nil: return .filtered
        case .malformed: return .malformed
        }
    }

    /// Where a datagram for `peer` goes now: the path's address and, when relayed, the channel.
    /// Nil when the peer has no path (roaming, and never heard from and no endpoint configured).
    @inline(__always)
    public func destination(of peer: PeerID) -> (address: SocketAddress, channel: UInt16?)? {
        let index = Int(peer.slot)
        let path = slots.withUnsafeBufferPointer { index < $0.count ? $0[index]?.path : nil }
        switch path {
        case .direct(let address): return (address, nil)
        case .relayed(let relay, let channel): return (relay, channel)
        case .roaming: return device.endpoint(of: peer).map { ($0, nil) }
        case nil: return nil
        }
    }

    /// The peer whose relayed path is (relay, channel): inbound ChannelData on it is theirs.
    @inline(__always)
    public func peer(relay: SocketAddress, channel: UInt16) -> PeerID? {
        channels[ChannelKey(relay: relay, channel: channel)]
    }

    @inline(__always)
    private func slot(_ id: PeerID) -> Slot? {
        let index = Int(id.slot)
        return index < slots.count ? slots[index] : nil
    }
}
