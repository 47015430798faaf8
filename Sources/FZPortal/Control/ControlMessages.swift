import FZControl
import FZCore
import Portal

// The wire types live in FZControl (shared with the daemons); this file holds what only the
// portal's side of the channel needs.

/// Which endpoint a peer connected to; decides the messages it may send and receive.
enum PeerRole: String, Sendable, CaseIterable {
    case gateway, client, relay
}

/// A validated message from a peer, typed by the endpoint it came in on.
enum PeerMessage: Sendable, Equatable {
    case client(FromClient)
    case gateway(FromGateway)
    case relay(FromRelay)
}

/// What the broker queues for one connection: a message, or the instruction to close it now
/// (with 1008 and the reason) after what was queued before.
enum Outgoing: Sendable, Equatable {
    case text(String)
    case close(reason: String)
}

enum InboundDecoder {
    /// Parses one text message from a peer of `role`, refusing unknown fields; never touches any
    /// state.
    static func decode(_ text: String, role: PeerRole) -> Result<PeerMessage, ErrorMessage> {
        do throws(ErrorMessage) {
            switch role {
            case .client: return .success(.client(try ControlCodec.decode(FromClient.self, from: text, .rejectUnknownFields)))
            case .gateway: return .success(.gateway(try ControlCodec.decode(FromGateway.self, from: text, .rejectUnknownFields)))
            case .relay: return .success(.relay(try ControlCodec.decode(FromRelay.self, from: text, .rejectUnknownFields)))
            }
        } catch {
            return .failure(error)
        }
    }
}

extension ResourceView {
    init(_ r: Resource) {
        self.init(id: r.id, siteId: r.siteId, name: r.name, address: r.address, filters: r.filters)
    }
}
