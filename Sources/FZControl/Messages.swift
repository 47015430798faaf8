import FZCore

// The bodies of the control channel's messages (docs/protocol.md). Keys are snake_case on the
// wire (`JSONCoding`); the envelope (`v`, `type`) sits beside the body's fields.

public struct ClientInit: Codable, Sendable, Hashable {
    public var clientId: ClientID
    public var actorId: ActorID
    public var tunnel: TunnelAddresses
    public var resources: [ResourceView]
    public var relays: [RelayView]

    public init(clientId: ClientID, actorId: ActorID, tunnel: TunnelAddresses, resources: [ResourceView], relays: [RelayView]) {
        self.clientId = clientId
        self.actorId = actorId
        self.tunnel = tunnel
        self.resources = resources
        self.relays = relays
    }
}

public struct GatewayInit: Codable, Sendable, Hashable {
    public var gatewayId: GatewayID
    public var siteId: SiteID
    public var relays: [RelayView]
    /// Unexpired authorizations the portal still holds for this gateway.
    public var authorizations: [Authorize]

    public init(gatewayId: GatewayID, siteId: SiteID, relays: [RelayView], authorizations: [Authorize]) {
        self.gatewayId = gatewayId
        self.siteId = siteId
        self.relays = relays
        self.authorizations = authorizations
    }
}

public struct RelayInit: Codable, Sendable, Hashable {
    public var relayId: RelayID
    public var name: String
    public var region: String
    public var addresses: [String]
    /// The deployment's TURN REST secret the relay checks client credentials with.
    public var turnSecret: Secret

    public init(relayId: RelayID, name: String, region: String, addresses: [String], turnSecret: Secret) {
        self.relayId = relayId
        self.name = name
        self.region = region
        self.addresses = addresses
        self.turnSecret = turnSecret
    }
}

/// Sent to a gateway: admit this client to this resource until `expires_at`.
public struct Authorize: Codable, Sendable, Hashable {
    public var requestId: RequestID
    public var clientId: ClientID
    public var clientPublicKey: WireGuardKey
    public var clientTunnelIps: [IPAddress]
    public var resource: ResourceView
    public var filters: [TrafficFilter]
    public var expiresAt: UnixTime
    public var iceCredentials: IcePair
    public var presharedKey: PresharedKey

    public init(
        requestId: RequestID, clientId: ClientID, clientPublicKey: WireGuardKey, clientTunnelIps: [IPAddress], resource: ResourceView,
        filters: [TrafficFilter], expiresAt: UnixTime, iceCredentials: IcePair, presharedKey: PresharedKey
    ) {
        self.requestId = requestId
        self.clientId = clientId
        self.clientPublicKey = clientPublicKey
        self.clientTunnelIps = clientTunnelIps
        self.resource = resource
        self.filters = filters
        self.expiresAt = expiresAt
        self.iceCredentials = iceCredentials
        self.presharedKey = presharedKey
    }
}

public struct Authorized: Codable, Sendable, Hashable {
    public var requestId: RequestID
    public init(requestId: RequestID) { self.requestId = requestId }
}

public struct RequestAccess: Codable, Sendable, Hashable {
    public var resourceId: ResourceID
    public init(resourceId: ResourceID) { self.resourceId = resourceId }
}

public struct AccessGranted: Codable, Sendable, Hashable {
    public var resourceId: ResourceID
    public var gatewayId: GatewayID
    public var gatewayPublicKey: WireGuardKey
    public var siteId: SiteID
    public var expiresAt: UnixTime
    public var iceCredentials: IcePair
    public var presharedKey: PresharedKey
    public var relays: [RelayView]

    public init(
        resourceId: ResourceID, gatewayId: GatewayID, gatewayPublicKey: WireGuardKey, siteId: SiteID, expiresAt: UnixTime,
        iceCredentials: IcePair, presharedKey: PresharedKey, relays: [RelayView]
    ) {
        self.resourceId = resourceId
        self.gatewayId = gatewayId
        self.gatewayPublicKey = gatewayPublicKey
        self.siteId = siteId
        self.expiresAt = expiresAt
        self.iceCredentials = iceCredentials
        self.presharedKey = presharedKey
        self.relays = relays
    }
}

public struct AccessDenied: Codable, Sendable, Hashable {
    public var resourceId: ResourceID
    public var reason: DenialReason

    public init(resourceId: ResourceID, reason: DenialReason) {
        self.resourceId = resourceId
        self.reason = reason
    }
}

/// ICE candidates that name a gateway: from a client (to that gateway), or to a client (from it).
public struct GatewayCandidates: Codable, Sendable, Hashable {
    public var gatewayId: GatewayID
    public var candidates: [String]

    public init(gatewayId: GatewayID, candidates: [String]) {
        self.gatewayId = gatewayId
        self.candidates = candidates
    }
}

/// ICE candidates that name a client: from a gateway (to that client), or to a gateway (from it).
public struct ClientCandidates: Codable, Sendable, Hashable {
    public var clientId: ClientID
    public var candidates: [String]

    public init(clientId: ClientID, candidates: [String]) {
        self.clientId = clientId
        self.candidates = candidates
    }
}

public struct Presence: Codable, Sendable, Hashable {
    public var gatewayId: GatewayID?
    public var relayId: RelayID?
    public var online: Bool
    /// For a relay coming online: the relay with credentials for the recipient.
    public var relay: RelayView?

    public init(gatewayId: GatewayID? = nil, relayId: RelayID? = nil, online: Bool, relay: RelayView? = nil) {
        self.gatewayId = gatewayId
        self.relayId = relayId
        self.online = online
        self.relay = relay
    }
}

/// A resource the client may see was added or changed.
public struct ResourceUpdated: Codable, Sendable, Hashable {
    public var resource: ResourceView
    public init(resource: ResourceView) { self.resource = resource }
}

/// A resource the client could see is gone or no longer granted to it.
public struct ResourceRemoved: Codable, Sendable, Hashable {
    public var resourceId: ResourceID
    public init(resourceId: ResourceID) { self.resourceId = resourceId }
}

/// Stop admitting this client's traffic to this resource.
public struct Revoke: Codable, Sendable, Hashable {
    public var clientId: ClientID
    public var resourceId: ResourceID

    public init(clientId: ClientID, resourceId: ResourceID) {
        self.clientId = clientId
        self.resourceId = resourceId
    }
}

/// An `error` message: fatal ones are followed by a close (docs/protocol.md lists the codes).
public struct ErrorMessage: Codable, Sendable, Hashable, Error {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    public static let malformed = "malformed"
    public static let unsupportedVersion = "unsupported_version"
    public static let unknownType = "unknown_type"
    public static let tooLarge = "too_large"
    public static let unsupported = "unsupported"
    public static let unknownRequest = "unknown_request"
    public static let unknownPeer = "unknown_peer"
    public static let internalError = "internal"
    public static let tokenRevoked = "token_revoked"
    public static let tokenExpired = "token_expired"
    public static let registrationFailed = "registration_failed"

    public static func malformed(_ message: String) -> Self { Self(code: malformed, message: message) }
}

// MARK: - The messages, by direction and peer kind

/// Portal → client.
public enum ToClient: Sendable, Hashable {
    case initialize(ClientInit)
    case accessGranted(AccessGranted)
    case accessDenied(AccessDenied)
    case iceCandidates(GatewayCandidates)
    case presence(Presence)
    case resourceUpdated(ResourceUpdated)
    case resourceRemoved(ResourceRemoved)
    case error(ErrorMessage)
    case pong
    case reconnect
}

/// Portal → gateway.
public enum ToGateway: Sendable, Hashable {
    case initialize(GatewayInit)
    case authorize(Authorize)
    case iceCandidates(ClientCandidates)
    case presence(Presence)
    case revoke(Revoke)
    case error(ErrorMessage)
    case pong
    case reconnect
}

/// Portal → relay.
public enum ToRelay: Sendable, Hashable {
    case initialize(RelayInit)
    case error(ErrorMessage)
    case pong
    case reconnect
}

/// Client → portal.
public enum FromClient: Sendable, Hashable {
    case ping
    case requestAccess(RequestAccess)
    case iceCandidates(GatewayCandidates)
}

/// Gateway → portal.
public enum FromGateway: Sendable, Hashable {
    case ping
    case authorized(Authorized)
    case iceCandidates(ClientCandidates)
}

/// Relay → portal.
public enum FromRelay: Sendable, Hashable {
    case ping
}
