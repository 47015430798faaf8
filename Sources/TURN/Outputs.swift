import FZCore

/// The I/O shell's side of relayed sockets. Binding a port is the one effect an Allocate cannot
/// do without: the server picks the port, the shell tries to bind it and reports whether it
/// could (another process may hold it), and the server moves on to another port if not.
public protocol RelaySocketProvider {
    /// Binds a UDP socket for relaying at `address`; false when that port cannot be had.
    mutating func openRelay(at address: SocketAddress, dontFragment: Bool) -> Bool
    /// Closes the relayed socket at `address` (allocation deleted or expired).
    mutating func closeRelay(at address: SocketAddress)
    /// Whether a new allocation for `user` may be created. The server has already checked its
    /// own counts against the quotas; a relay that runs several servers (one per thread) answers
    /// here from a ledger they share, and records which server owns the 5-tuple.
    mutating func admitAllocation(_ tuple: FiveTuple, user: String, userQuota: Int, totalQuota: Int) -> Bool
    /// An allocation admitted with `admitAllocation` is gone (or was never created).
    mutating func allocationEnded(_ tuple: FiveTuple, user: String)
}

extension RelaySocketProvider {
    /// A single server needs no shared ledger: its own counts are the whole truth.
    public mutating func admitAllocation(_ tuple: FiveTuple, user: String, userQuota: Int, totalQuota: Int) -> Bool { true }
    public mutating func allocationEnded(_ tuple: FiveTuple, user: String) {}
}

/// What to do with a datagram that arrived from a client on a listening socket.
public enum ClientAction: Sendable, Equatable {
    /// Nothing to send (consumed, or dropped and counted).
    case none
    /// Send these bytes back to the client from the listening socket it used.
    case reply([UInt8])
    /// Relay part of the input datagram (a ChannelData payload or a Send indication's DATA value)
    /// to a peer, in place: `payloadOffset`/`payloadLength` index the bytes given to `handleClient`.
    case forward(from: SocketAddress, to: SocketAddress, payloadOffset: Int, payloadLength: Int, dontFragment: Bool)
}

/// What to do with a datagram that arrived from a peer on a relayed socket.
public enum PeerAction: Sendable, Equatable {
    case none
    /// Prepend a 4-byte ChannelData header for `channel` to the payload (in the buffer's
    /// headroom) and send it to the client from `listener`.
    case channelData(client: SocketAddress, listener: SocketAddress, channel: UInt16)
    /// Send the payload to the client from `listener` inside a Data indication from `peer`
    /// (RFC 8656 §11.3). The shell writes it with `DataIndication.write` and a fresh random
    /// transaction ID (`TransactionIDPool`); the server has checked that it is at most
    /// `ServerConfig.maxDataIndicationSize` bytes.
    case dataIndication(client: SocketAddress, listener: SocketAddress, peer: SocketAddress)
    /// As `.channelData`, for an allocation whose client is on a stream (TCP): the shell writes
    /// the header, the payload and padding to a multiple of four (RFC 8656 §12.5) to the
    /// connection `tuple` names.
    case streamChannelData(FiveTuple, channel: UInt16)
    /// As `.dataIndication`, for an allocation whose client is on a stream.
    case streamDataIndication(FiveTuple, peer: SocketAddress)
}

/// Things worth a log line, drained by the shell with `drainEvents()`.
public enum ServerEvent: Sendable, Equatable {
    case allocationCreated(FiveTuple, username: String, relayed: [SocketAddress], lifetime: Duration)
    case allocationRefreshed(FiveTuple, lifetime: Duration)
    case allocationDeleted(FiveTuple, reason: DeletionReason)
    /// An authenticated request was refused (unauthenticated refusals are only counted: they
    /// are what an attacker can produce at will).
    case requestRefused(FiveTuple, username: String, method: UInt16, code: Int)

    public enum DeletionReason: String, Sendable {
        case refreshedToZero = "refresh 0", expired, policyReload = "reload"
        /// The client's TCP connection closed (RFC 8656 §3.1: the allocation is the connection's).
        case connectionClosed = "connection closed"
    }
}

/// Counters the shell exports as metrics. Everything the server drops is counted here.
public struct ServerStats: Sendable, Equatable {
    public var allocationsCreated: UInt64 = 0
    public var allocationsDeleted: UInt64 = 0
    public var allocationsExpired: UInt64 = 0
    public var permissionsCreated: UInt64 = 0
    public var channelsBound: UInt64 = 0
    public var bindingRequests: UInt64 = 0
    public var challenges: UInt64 = 0
    public var staleNonces: UInt64 = 0
    public var authFailures: UInt64 = 0
    public var rateLimited: UInt64 = 0
    public var errorResponses: UInt64 = 0
    public var malformedDropped: UInt64 = 0
    public var unexpectedDropped: UInt64 = 0
    public var peerDenied: UInt64 = 0
    public var noPermissionDropped: UInt64 = 0
    public var noAllocationDropped: UInt64 = 0
    public var oversizeDropped: UInt64 = 0
    public var channelDataIn: UInt64 = 0
    public var sendIndicationsIn: UInt64 = 0
    public var peerPacketsIn: UInt64 = 0
    public var relayedBytesToPeers: UInt64 = 0
    public var relayedBytesToClients: UInt64 = 0

    public init() {}
}
