import FZCore
import STUN

/// The transport between client and relay (RFC 8656 §3.1). The peer side is always UDP.
public enum ClientTransport: UInt8, Sendable, Hashable {
    case udp, tcp
}

/// A client's transport 5-tuple as the relay sees it (RFC 8656 §2): the client's address, the
/// listening address it reached and the transport. Over TCP the tuple names the connection, so an
/// allocation is the connection's (RFC 8656 §3.1) and a UDP client at the same address and port is
/// another tuple.
public struct FiveTuple: Hashable, Sendable, CustomStringConvertible {
    public var client: SocketAddress
    public var listener: SocketAddress
    public var transport: ClientTransport

    public init(client: SocketAddress, listener: SocketAddress, transport: ClientTransport = .udp) {
        self.client = client
        self.listener = listener
        self.transport = transport
    }

    /// UDP tuples hash exactly the two addresses, as before TCP existed: the UDP data path (one
    /// lookup per datagram) pays nothing for the transport field.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(client)
        hasher.combine(listener)
        if transport != .udp { hasher.combine(transport) }
    }

    public var description: String { transport == .udp ? "\(client)->\(listener)" : "\(client)->\(listener)/tcp" }
}

/// The credentials a request was authenticated with; responses are signed with the same.
struct AuthContext: Sendable {
    var username: String
    var key: [UInt8]
    var integrity: IntegrityAlgorithm
}

struct Channel: Sendable {
    var peer: SocketAddress
    var expiresAt: Timestamp
}

/// One allocation (RFC 8656 §2.2): relayed addresses, permissions and channels.
struct Allocation: Sendable {
    let fiveTuple: FiveTuple
    let username: String
    /// Bound (local) relayed addresses: one, or two for a dual-stack allocation.
    var relayed: [SocketAddress]
    var expiresAt: Timestamp
    var dontFragment: Bool
    /// Peer IP → expiry (permissions are per IP, RFC 8656 §9).
    var permissions: [IPAddress: Timestamp] = [:]
    var channels: [UInt16: Channel] = [:]
    var channelByPeer: [SocketAddress: UInt16] = [:]
    /// The last Allocate transaction and its success response, for retransmissions (§7.2).
    var allocateTransaction: TransactionID
    var allocateResponse: [UInt8]

    func relayed(for family: AddressFamily) -> SocketAddress? { relayed.first { $0.family == family } }

    func hasPermission(_ ip: IPAddress, now: Timestamp) -> Bool {
        guard let exp = permissions[ip] else { return false }
        return exp > now
    }
}

/// A port kept for a later Allocate by RESERVATION-TOKEN (RFC 8656 §7.2, EVEN-PORT R=1).
struct Reservation: Sendable {
    var address: SocketAddress
    var expiresAt: Timestamp
}
