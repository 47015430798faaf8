import FZControl
import Portal

/// Request bodies of the admin API (snake_case on the wire).
struct NameBody: StrictlyKeyed {
    var name: String
    enum CodingKeys: String, CodingKey, CaseIterable { case name }
}

struct CreateActorBody: StrictlyKeyed {
    var name: String
    var kind: PortalActor.Kind?
    enum CodingKeys: String, CodingKey, CaseIterable { case name, kind }
}

struct CreateResourceBody: StrictlyKeyed {
    var name: String
    var siteId: String
    var address: ResourceAddress
    var filters: [TrafficFilter]?
    enum CodingKeys: String, CodingKey, CaseIterable { case name, siteId, address, filters }
}

struct AddMemberBody: StrictlyKeyed {
    var actorId: String
    enum CodingKeys: String, CodingKey, CaseIterable { case actorId }
}

struct CreatePolicyBody: StrictlyKeyed {
    var groupId: String
    var resourceId: String
    var conditions: PolicyConditions?
    enum CodingKeys: String, CodingKey, CaseIterable { case groupId, resourceId, conditions }
}

struct CreateTokenBody: StrictlyKeyed {
    var name: String
    var scope: TokenScope
    var subject: String?
    var expiresAt: UnixTime?
    enum CodingKeys: String, CodingKey, CaseIterable { case name, scope, subject, expiresAt }
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
