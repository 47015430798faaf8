import FZCore

/// A datagram for the relay. The client only ever talks to `TURNClientConfig.server`.
public struct TURNTransmit: Sendable, Equatable {
    public var destination: SocketAddress
    public var bytes: [UInt8]
}

/// What one inbound datagram was.
public enum TURNInput: Sendable, Equatable {
    /// Consumed (a response, an indication without data) or dropped and counted.
    case none
    /// Data from `peer` (ChannelData or a Data indication), at `payload` in the bytes handed to
    /// `handle(datagram:from:now:)`: unwrapped in place, nothing copied.
    case data(peer: SocketAddress, payload: Range<Int>)
}

/// Why an allocation could not be made or was lost.
public enum TURNFailure: Sendable, Equatable, CustomStringConvertible {
    /// No answer after the whole retransmission schedule: the relay or the path is gone.
    case timeout
    /// 437 (RFC 8656 §7.2, §8): the server holds no allocation for this 5-tuple (it restarted, or
    /// the allocation expired) or, on Allocate, holds a different one.
    case allocationMismatch
    /// 401 after authenticating: the credentials are wrong or expired, or the server forgot us.
    case unauthenticated
    /// The server answered nonces that were stale every time.
    case staleNonce
    /// Any other error response (403, 486, 508...).
    case error(code: Int)
    /// A success response without the attributes it must carry.
    case badResponse
    /// The allocation's lifetime ran out before a refresh succeeded.
    case expired

    public var description: String {
        switch self {
        case .timeout: "timeout"
        case .allocationMismatch: "437 allocation mismatch"
        case .unauthenticated: "401 unauthenticated"
        case .staleNonce: "438 stale nonce (repeatedly)"
        case .error(let c): "error \(c)"
        case .badResponse: "bad response"
        case .expired: "expired"
        }
    }
}

/// What happened, for the owner of the client (drained with `pollEvent()`).
public enum TURNClientEvent: Sendable, Equatable {
    case allocated(relayed: SocketAddress, mapped: SocketAddress?, lifetime: Duration)
    case refreshed(lifetime: Duration)
    case permissionCreated(IPAddress)
    case permissionFailed(IPAddress, TURNFailure)
    case channelBound(peer: SocketAddress, channel: UInt16)
    case channelBindFailed(peer: SocketAddress, TURNFailure)
    /// The Allocate itself failed; `allocate(now:)` may be called again.
    case allocationFailed(TURNFailure)
    /// A working allocation is gone; `allocate(now:)` makes a new one (the peers asked for are
    /// installed on it again).
    case allocationLost(TURNFailure)
    /// Refresh with LIFETIME 0 was answered (or timed out: the server drops it then anyway).
    case deallocated
}

/// Counters for metrics; everything the client drops is counted here.
public struct TURNClientStats: Sendable, Equatable {
    public var requestsSent: UInt64 = 0
    public var retransmissions: UInt64 = 0
    public var transactionsTimedOut: UInt64 = 0
    public var challenges: UInt64 = 0
    public var staleNonces: UInt64 = 0
    /// Datagrams that are neither STUN nor ChannelData, or STUN that does not decode.
    public var malformedDropped: UInt64 = 0
    /// Responses whose transaction ID or method matches no request in flight.
    public var unmatchedDropped: UInt64 = 0
    /// Responses without valid integrity where integrity is required (RFC 8489 §9.2.5).
    public var unauthenticatedDropped: UInt64 = 0
    /// Datagrams from an address other than the server.
    public var foreignDropped: UInt64 = 0
    /// ChannelData on a channel the client did not bind.
    public var unknownChannelDropped: UInt64 = 0
    /// Requests and indications from the server the client does not act on.
    public var unexpectedDropped: UInt64 = 0
    /// `send` calls for a peer without permission or channel.
    public var noPermissionDropped: UInt64 = 0
    public var channelDataIn: UInt64 = 0
    public var dataIndicationsIn: UInt64 = 0
    public var channelDataOut: UInt64 = 0
    public var sendIndicationsOut: UInt64 = 0

    public init() {}
}
