import FZControl
/// Someone or something that can be granted access: a person or a service account.
/// (Named `PortalActor` because `Actor` is Swift's protocol for actor types.)
public struct PortalActor: Hashable, Sendable, Codable {
    public enum Kind: String, Hashable, Sendable, Codable {
        case user
        case serviceAccount = "service_account"
    }

    public var id: ActorID
    public var name: String
    public var kind: Kind

    public init(id: ActorID, name: String, kind: Kind) {
        self.id = id
        self.name = name
        self.kind = kind
    }
}

/// A set of actors; policies grant resources to groups, never to single actors.
public struct Group: Hashable, Sendable, Codable {
    public var id: GroupID
    public var name: String

    public init(id: GroupID, name: String) {
        self.id = id
        self.name = name
    }
}

public struct Membership: Hashable, Sendable, Codable {
    public var groupId: GroupID
    public var actorId: ActorID

    public init(groupId: GroupID, actorId: ActorID) {
        self.groupId = groupId
        self.actorId = actorId
    }
}

/// A network context (VPC, LAN) holding resources and gateways.
public struct Site: Hashable, Sendable, Codable {
    public var id: SiteID
    public var name: String

    public init(id: SiteID, name: String) {
        self.id = id
        self.name = name
    }
}

/// A gateway of one site, known by its WireGuard public key (a site token is shared by all the
/// site's gateways; the key tells them apart and keeps the id stable across reconnects).
public struct Gateway: Hashable, Sendable, Codable {
    public var id: GatewayID
    public var siteId: SiteID
    public var name: String
    public var publicKey: WireGuardKey

    public init(id: GatewayID, siteId: SiteID, name: String, publicKey: WireGuardKey) {
        self.id = id
        self.siteId = siteId
        self.name = name
        self.publicKey = publicKey
    }
}

/// A STUN/TURN relay registered with the portal.
public struct Relay: Hashable, Sendable, Codable {
    public var id: RelayID
    public var name: String
    public var region: String
    /// `host:port` strings clients use to reach it (`198.51.100.7:3478`).
    public var addresses: [String]

    public init(id: RelayID, name: String, region: String, addresses: [String]) {
        self.id = id
        self.name = name
        self.region = region
        self.addresses = addresses
    }
}

/// Checks shared by every named entity.
public enum Names {
    public static func validate(_ name: String, field: String = "name") throws(ValidationError) -> String {
        let trimmed = name.trimmingSpaces
        guard !trimmed.isEmpty else { throw ValidationError(field: field, reason: "must not be empty") }
        guard trimmed.utf8.count <= 255 else { throw ValidationError(field: field, reason: "longer than 255 bytes") }
        // A NUL or another control character would be stored (and shown) differently from what
        // the API echoed.
        guard !trimmed.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw ValidationError(field: field, reason: "must not contain control characters")
        }
        return trimmed
    }
}
