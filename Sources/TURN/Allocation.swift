import FZCore
import STUN

/// A client's transport 5-tuple as the relay sees it (RFC 8656 §2): the client's address and the
/// listening address it reached. The transport is always UDP here.
public struct FiveTuple: Hashable, Sendable, CustomStringConvertible {
    public var client: SocketAddress
    public var listener: SocketAddress

    public init(client: SocketAddress, listener: SocketAddress) {
        self.client = client
        self.listener = listener
    }

    public var description: String { "\(client)->\(listener)" }
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
