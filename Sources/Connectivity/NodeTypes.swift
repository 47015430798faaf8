import FZCore

/// A TURN/STUN relay the portal listed, with the credentials it handed out.
public struct NodeRelay: Sendable, Equatable {
    /// The portal's relay id: stable across credential refreshes.
    public var id: String
    public var name: String
    public var address: SocketAddress
    public var credentials: TURNCredentials

    public init(id: String, name: String, address: SocketAddress, credentials: TURNCredentials) {
        self.id = id
        self.name = name
        self.address = address
        self.credentials = credentials
    }
}

/// Where a peer's data goes now, as the data plane needs it (mirrors `Tunnel.PeerPath`, which
/// this target does not depend on).
public enum NodePath: Sendable, Hashable, CustomStringConvertible {
    /// Straight to the peer's candidate (host, reflexive, or the peer's own relayed address).
    case direct(SocketAddress)
    /// Through our allocation on `relay` (the server's address), as ChannelData on `channel`.
    case relayed(relay: SocketAddress, channel: UInt16)

    public var description: String {
        switch self {
        case .direct(let a): "direct \(a)"
        case .relayed(let r, let c): "relayed \(r) channel 0x\(String(c, radix: 16))"
        }
    }
}

/// A datagram to send from the local socket `socket` (one of `NodeConfig.sockets`).
public struct NodeTransmit: Sendable, Equatable {
    public var socket: SocketAddress
    public var destination: SocketAddress
    public var bytes: [UInt8]
}

/// What one inbound datagram was, for the node's owner.
public enum NodeInput: Sendable, Equatable {
    /// Consumed by the node (ICE, TURN, a relay probe) or dropped and counted.
    case handled
    /// Not the node's: WireGuard (or other data) straight from `from`.
    case notMine
    /// Data a peer sent through our allocation on `relay`: the payload is at `payload` in the
    /// bytes handed in (unwrapped in place). `channel` is the channel replies go back on: the one
    /// it came on as ChannelData, or, for a Data indication, one the node binds to the peer at that
    /// moment (its ChannelBind is sent before any reply); nil only when no channel number is free.
    case relayedData(payload: Range<Int>, peer: SocketAddress, relay: SocketAddress, channel: UInt16?)
}

public enum NodeEvent<Peer: Hashable & Sendable>: Sendable, Equatable {
    /// A local candidate to signal to `peer` (its `line` goes into `ice_candidates`).
    case localCandidate(Peer, Candidate)
    /// The peer's data goes over this path from now on (first connection, upgrade, failover).
    case path(Peer, NodePath, IcePair)
    /// Every path to the peer stopped answering; checks go on (a `path` event follows if one recovers).
    case disconnected(Peer)
    /// Nothing worked within the agent's connect timeout: the owner asks for a new connection
    /// (in fz: a new `request_access`, which may pick another gateway).
    case failed(Peer)
    /// An allocation was made on a relay (its relayed address is a candidate of every peer).
    case relayAllocated(id: String, relayed: SocketAddress)
    /// A relay stopped answering, or lost our allocation; the next best relay is tried.
    case relayLost(id: String, reason: String)
}

/// Counters for metrics: everything the node drops is counted.
public struct NodeStats: Sendable, Equatable {
    public var probesSent: UInt64 = 0
    public var probesAnswered: UInt64 = 0
    public var probesTimedOut: UInt64 = 0
    /// STUN nobody claimed: no agent for the ufrag, no transaction, not Binding.
    public var unclaimedSTUN: UInt64 = 0
    /// STUN that did not decode.
    public var malformed: UInt64 = 0
    /// Relay transmits held until a permission was confirmed, and those dropped because the queue was full.
    public var relayTransmitsHeld: UInt64 = 0
    public var relayTransmitsDropped: UInt64 = 0
    /// ChannelData or Data indications from a relay whose payload was neither STUN nor data for a peer.
    public var relayedDropped: UInt64 = 0
    public var allocationsMade: UInt64 = 0
    public var allocationsLost: UInt64 = 0
    /// 437 answers: the relay lost our 5-tuple (it restarted, or our address changed); answered by
    /// re-allocating and re-probing at once.
    public var addressChanges: UInt64 = 0

    public init() {}
}

/// A relay as the node sees it, for status output and tests.
public struct NodeRelayStatus: Sendable, Equatable {
    public var id: String
    public var name: String
    public var address: SocketAddress
    /// Median of the recent STUN Binding round trips; nil until one was answered.
    public var rtt: Duration?
    public var reachable: Bool
    /// Our relayed address there, when we hold an allocation.
    public var relayed: SocketAddress?
}

/// Everything that shapes a `ConnectivityNode`.
public struct NodeConfig: Sendable {
    public var role: IceRole
    /// The local sockets datagrams leave from, one per address family; a wildcard address
    /// (`0.0.0.0:51820`) is fine: host candidates come from `hostAddresses`.
    public var sockets: [SocketAddress]
    /// The addresses to announce as host candidates, each with the port of its family's socket.
    public var hostAddresses: [IPAddress]
    /// The template every connection's agent is made from (timers; role and credentials are set per connection).
    public var ice: IceAgentConfig
    /// How many relays hold an allocation at once: the best by RTT and a standby on another relay.
    public var allocations = 2
    /// RTT probes: one STUN Binding per relay this often (more often while a relay is unmeasured).
    public var probeInterval: Duration = .seconds(25)
    /// A probe unanswered after this long counts as lost; two lost in a row make the relay unreachable.
    public var probeTimeout: Duration = .seconds(1)
    /// Samples the RTT median is taken over.
    public var rttSamples = 5
    /// A relay that failed is not tried again for this long (unless no other is left).
    public var relayCooldown: Duration = .seconds(30)
    /// Relay transmits held per relay while a permission is being installed.
    public var maxHeldRelayTransmits = 64
    /// Like WebRTC's `iceTransportPolicy: "relay"`: only relayed local candidates, so every path
    /// goes through our allocation and the peer never learns our addresses (nor do checks leave
    /// from the bare socket). For deployments that want it, and for tests of the relayed path.
    public var relayOnly = false
    public var turnRetransmission: RetransmissionSchedule = .rfc8489
    public var software: String?

    public init(role: IceRole, sockets: [SocketAddress], hostAddresses: [IPAddress]) {
        self.role = role
        self.sockets = sockets
        self.hostAddresses = hostAddresses
        self.ice = IceAgentConfig(role: role)
    }
}
