import Connectivity
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

/// What a pipeline asks of each client's TURN client.
enum TransactionKind: Sendable, Equatable {
    /// Allocate (RFC 8656 §7): the 401 dance is the TURN client's.
    case allocate
    /// ChannelBind (channel transport) or CreatePermission (Send indications) for the echo peer.
    case bind
    /// Refresh with LIFETIME 0 (RFC 8656 §8): deletes the allocation.
    case release

    var name: String {
        switch self {
        case .allocate: "allocate"
        case .bind: "bind"
        case .release: "release"
        }
    }
}

/// One benchmark client: its own UDP socket (so its own 5-tuple at the server, as distinct
/// clients have) and its own `TURNClient` — the product's sans-IO client, so the benchmark
/// measures what the product would do. Loop-confined.
final class ClientAllocation {
    let index: Int
    let socket: UDPSocket
    /// The data path's batch (nil for idle allocations, which send only control messages).
    let queue: SendQueue?
    var turn: TURNClient
    var bound = false
    /// The client's counters when the current pipeline operation began (for its deltas).
    var statsAtBegin = TURNClientStats()
    var busy = false

    init(index: Int, socket: UDPSocket, queue: SendQueue?, turn: TURNClient) {
        self.index = index
        self.socket = socket
        self.queue = queue
        self.turn = turn
    }

    var relayed: SocketAddress? { turn.relayedAddress }
    var allocated: Bool { turn.relayedAddress != nil }
}
