import FZCore
import Foundation
import Portal
import FZCrypto

/// The control channel's wire format (docs/protocol.md): one JSON object per WebSocket text
/// message, `{"v": 1, "type": "…", …fields}`, snake_case keys.
enum ControlProtocol {
    static let version = 1
}

/// Which endpoint a peer connected to; decides the messages it may send and receive.
enum PeerRole: String, Sendable, CaseIterable {
    case gateway, client, relay
}

// MARK: - Outbound (portal → peer)

/// A message the portal sends: the envelope (`v`, `type`) and the body's fields side by side.
struct Outbound<Body: Encodable>: Encodable {
    var type: String
    var body: Body

    enum Keys: String, CodingKey { case v, type }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(ControlProtocol.version, forKey: .v)
        try c.encode(type, forKey: .type)
        try body.encode(to: encoder)
    }

    var json: String {
        // Every body is made of strings, numbers and arrays of them: encoding cannot fail.
        (try? String(decoding: JSONCoding.encoder.encode(self), as: UTF8.self)) ?? #"{"v":1,"type":"error","code":"internal"}"#
    }
}

struct Empty: Encodable {}

struct ErrorBody: Encodable, Sendable {
    var code: String
    var message: String
}

/// ICE username fragment and password of one side.
struct IceCredentials: Codable, Sendable, Hashable {
    var username: String
    var password: String

    static func random() -> IceCredentials {
        // RFC 8445: ufrag ≥ 4 characters, password ≥ 22 characters (here 8 and 32 hex digits).
        IceCredentials(username: Hex.encode(SecureRandom.bytes(4)), password: Hex.encode(SecureRandom.bytes(16)))
    }
}

/// Both sides' ICE credentials, sent identically to the client and the gateway.
struct IcePair: Codable, Sendable, Hashable {
    var client: IceCredentials
    var gateway: IceCredentials
}

struct ResourceView: Encodable, Sendable, Hashable {
    var id: ResourceID
    var siteId: SiteID
    var name: String
    var address: ResourceAddress
    var filters: [TrafficFilter]

    init(_ r: Resource) {
        id = r.id
        siteId = r.siteId
        name = r.name
        address = r.address
        filters = r.filters
    }
}

/// A relay with TURN REST credentials minted for the recipient.
struct RelayView: Encodable, Sendable {
    var id: RelayID
    var name: String
    var region: String
    var addresses: [String]
    var username: String
    var password: String
    var expiresAt: UnixTime
}

struct TunnelAddresses: Encodable, Sendable {
    var ipv4: String
    var ipv6: String
}

struct ClientInit: Encodable, Sendable {
    var clientId: ClientID
    var actorId: ActorID
    var tunnel: TunnelAddresses
    var resources: [ResourceView]
    var relays: [RelayView]
}

struct GatewayInit: Encodable, Sendable {
    var gatewayId: GatewayID
    var siteId: SiteID
    var relays: [RelayView]
    var authorizations: [Authorize]
}

struct RelayInit: Encodable, Sendable {
    var relayId: RelayID
    var name: String
    var region: String
    var addresses: [String]
    /// The TURN REST shared secret the relay checks client credentials with.
    var turnSecret: String
}

/// Sent to a gateway: admit this client to this resource until `expires_at`.
struct Authorize: Encodable, Sendable {
    var requestId: String
    var clientId: ClientID
    var clientPublicKey: WireGuardKey
    var clientTunnelIps: [String]
    var resource: ResourceView
    var filters: [TrafficFilter]
    var expiresAt: UnixTime
    var iceCredentials: IcePair
    var presharedKey: String
}

struct AccessGranted: Encodable, Sendable {
    var resourceId: ResourceID
    var gatewayId: GatewayID
    var gatewayPublicKey: WireGuardKey
    var siteId: SiteID
    var expiresAt: UnixTime
    var iceCredentials: IcePair
    var presharedKey: String
    var relays: [RelayView]
}

struct AccessDenied: Encodable, Sendable {
    var resourceId: ResourceID
    var reason: DenialReason
}

struct CandidatesToGateway: Encodable, Sendable {
    var clientId: ClientID
    var candidates: [String]
}

struct CandidatesToClient: Encodable, Sendable {
    var gatewayId: GatewayID
    var candidates: [String]
}

struct Presence: Encodable, Sendable {
    var gatewayId: GatewayID?
    var relayId: RelayID?
    var online: Bool
    /// For a relay coming online: the relay with credentials for the recipient.
    var relay: RelayView?
}

/// Sent to a client: a resource it may see was added or changed.
struct ResourceUpdated: Encodable, Sendable {
    var resource: ResourceView
}

/// Sent to a client: a resource it could see is gone or no longer granted to it.
struct ResourceRemoved: Encodable, Sendable {
    var resourceId: ResourceID
}

struct Revoke: Encodable, Sendable {
    var clientId: ClientID
    var resourceId: ResourceID
}

// MARK: - Inbound (peer → portal)

/// A validated message from a peer.
enum Inbound: Sendable, Equatable {
    case ping
    case requestAccess(ResourceID)
    case authorized(requestID: String)
    case candidatesForGateway(GatewayID, [String])
    case candidatesForClient(ClientID, [String])
}

/// Why an inbound message was refused; the connection is closed after the `error` message.
struct ProtocolViolation: Error, Equatable {
    var code: String
    var message: String

    static func malformed(_ m: String) -> Self { Self(code: "malformed", message: m) }
}

enum InboundDecoder {
    static let maxCandidates = 64
    static let maxCandidateBytes = 512
    static let maxIDBytes = 128

    private struct Header: Decodable {
        var v: Int?
        var type: String?
    }
    private struct ResourceBody: Decodable { var resourceId: String }
    private struct RequestBody: Decodable { var requestId: String }
    private struct GatewayCandidates: Decodable {
        var gatewayId: String
        var candidates: [String]
    }
    private struct ClientCandidates: Decodable {
        var clientId: String
        var candidates: [String]
    }

    /// Parses one text message from a peer of `role`; never touches any state.
    static func decode(_ text: String, role: PeerRole) -> Result<Inbound, ProtocolViolation> {
        let data = Data(text.utf8)
        guard (try? JSONSerialization.jsonObject(with: data)) is [String: Any] else {
            return .failure(.malformed("not a JSON object"))
        }
        guard let header = try? JSONCoding.decoder.decode(Header.self, from: data) else {
            return .failure(.malformed("v and type must be a number and a string"))
        }
        guard header.v == ControlProtocol.version else {
            return .failure(ProtocolViolation(code: "unsupported_version", message: "expected v: \(ControlProtocol.version)"))
        }
        guard let type = header.type else { return .failure(.malformed("type is required")) }
        do {
            switch (role, type) {
            case (_, "ping"):
                return .success(.ping)
            case (.client, "request_access"):
                let b = try JSONCoding.decoder.decode(ResourceBody.self, from: data)
                return .success(.requestAccess(ResourceID(try id(b.resourceId, "resource_id"))))
            case (.client, "ice_candidates"):
                let b = try JSONCoding.decoder.decode(GatewayCandidates.self, from: data)
                return .success(.candidatesForGateway(GatewayID(try id(b.gatewayId, "gateway_id")), try candidates(b.candidates)))
            case (.gateway, "authorized"):
                let b = try JSONCoding.decoder.decode(RequestBody.self, from: data)
                return .success(.authorized(requestID: try id(b.requestId, "request_id")))
            case (.gateway, "ice_candidates"):
                let b = try JSONCoding.decoder.decode(ClientCandidates.self, from: data)
                return .success(.candidatesForClient(ClientID(try id(b.clientId, "client_id")), try candidates(b.candidates)))
            default:
                return .failure(ProtocolViolation(code: "unknown_type", message: "\(role.rawValue)s cannot send \(type)"))
            }
        } catch let v as ProtocolViolation {
            return .failure(v)
        } catch let e as DecodingError {
            return .failure(.malformed(APIError.decoding(e).field.map { "\($0) is missing or malformed" } ?? "cannot be decoded"))
        } catch {
            return .failure(.malformed("cannot be decoded"))
        }
    }

    private static func id(_ s: String, _ field: String) throws -> String {
        guard !s.isEmpty, s.utf8.count <= maxIDBytes else { throw ProtocolViolation.malformed("\(field) must be 1-\(maxIDBytes) bytes") }
        return s
    }

    private static func candidates(_ c: [String]) throws -> [String] {
        guard c.count <= maxCandidates, c.allSatisfy({ !$0.isEmpty && $0.utf8.count <= maxCandidateBytes }) else {
            throw ProtocolViolation.malformed("candidates: at most \(maxCandidates) strings of 1-\(maxCandidateBytes) bytes")
        }
        return c
    }
}
