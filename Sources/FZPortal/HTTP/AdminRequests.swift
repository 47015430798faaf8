import Portal

/// Request bodies of the admin API (snake_case on the wire).
struct NameBody: Decodable {
    var name: String
}

struct CreateActorBody: Decodable {
    var name: String
    var kind: PortalActor.Kind?
}

struct CreateResourceBody: Decodable {
    var name: String
    var siteId: String
    var address: ResourceAddress
    var filters: [TrafficFilter]?
}

struct AddMemberBody: Decodable {
    var actorId: String
}

struct CreatePolicyBody: Decodable {
    var groupId: String
    var resourceId: String
    var conditions: PolicyConditions?
}

struct CreateTokenBody: Decodable {
    var name: String
    var scope: TokenScope
    var subject: String?
    var expiresAt: UnixTime?
}

/// A token as listed: never its hash, never its secret.
struct TokenView: Encodable, Sendable {
    var id: TokenID
    var name: String
    var scope: TokenScope
    var subject: String?
    var createdAt: UnixTime
    var expiresAt: UnixTime?
    var revokedAt: UnixTime?

    init(_ t: Token) {
        id = t.id
        name = t.name
        scope = t.scope
        subject = t.subject
        createdAt = t.createdAt
        expiresAt = t.expiresAt
        revokedAt = t.revokedAt
    }
}

/// The answer to a token creation: the only time the secret is shown.
struct CreatedToken: Encodable, Sendable {
    var token: TokenView
    var secret: String
}
