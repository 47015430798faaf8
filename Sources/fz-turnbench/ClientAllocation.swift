import FZCore
import FZLinux
import STUN

/// How the benchmark's datagrams reach the peer.
enum Transport: String, Sendable {
    /// ChannelBind once, then ChannelData frames (RFC 8656 §12): what WebRTC stacks use.
    case channel
    /// CreatePermission once, then Send indications out and Data indications back (RFC 8656 §11).
    case sendIndication = "send-indication"
    /// No TURN at all: ChannelData frames on channel 0x4000 straight to an fz-forwarder.
    case raw
}

/// What a client transaction does.
enum TransactionKind: Sendable, Equatable {
    /// Allocate (RFC 8656 §7): unauthenticated first, then with the realm and nonce of the 401.
    case allocate
    /// ChannelBind (channel transport) or CreatePermission (Send indications) for the echo peer.
    case bind
    /// Refresh with this LIFETIME; 0 deletes the allocation (RFC 8656 §8).
    case refresh(lifetime: UInt32)

    var name: String {
        switch self {
        case .allocate: "allocate"
        case .bind: "bind"
        case .refresh(let l): l == 0 ? "release" : "refresh"
        }
    }
}

/// One outstanding request and what retransmitting it needs (RFC 8489 §6.2.1).
struct Transaction {
    var kind: TransactionKind
    var id: TransactionID
    var bytes: [UInt8]
    var authenticated: Bool
    var sentAt: Timestamp
    var rto: Duration
    var attempts: Int
    var staleRetries: Int
}

/// One benchmark client: its own UDP socket (so its own 5-tuple at the server, as distinct
/// clients have), the allocation's TURN state, and at most one transaction in flight.
/// Loop-confined.
final class ClientAllocation {
    let index: Int
    let socket: UDPSocket
    /// The data path's batch (nil for idle allocations, which send only control messages).
    let queue: SendQueue?
    var relayed: SocketAddress?
    var realm: String?
    var nonce: String?
    var key: [UInt8]?
    var allocated = false
    var bound = false
    var transaction: Transaction?

    init(index: Int, socket: UDPSocket, queue: SendQueue?) {
        self.index = index
        self.socket = socket
        self.queue = queue
    }
}
