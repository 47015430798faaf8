import FZControl
import FZCore
import Portal

/// Everything the portal persists. SQLite (`SQLiteStore`) implements it today; a PostgreSQL
/// implementation for several portal replicas can implement the same protocol later.
///
/// Each method is one transaction: a change touching several rows (a client and its
/// addresses, a resource and the policies that go with it) is applied entirely or not at all.
public protocol PortalStore: Sendable {
    func insert(actor: PortalActor) async throws
    func actors() async throws -> [PortalActor]
    func actor(_ id: ActorID) async throws -> PortalActor?
    /// Removes the actor with its memberships and clients.
    func deleteActor(_ id: ActorID) async throws -> Deletion

    func insert(group: Group) async throws
    func groups() async throws -> [Group]
    /// Removes the group with its memberships and policies.
    func deleteGroup(_ id: GroupID) async throws -> Deletion

    func insert(membership: Membership) async throws
    func memberships() async throws -> [Membership]
    func deleteMembership(_ m: Membership) async throws -> Deletion
    func groupIDs(ofActor id: ActorID) async throws -> Set<GroupID>

    func insert(site: Site) async throws
    func sites() async throws -> [Site]
    func site(_ id: SiteID) async throws -> Site?
    /// Removes the site with its resources, their policies, and its gateways.
    func deleteSite(_ id: SiteID) async throws -> Deletion

    func insert(resource: Resource) async throws
    func resources() async throws -> [Resource]
    func resource(_ id: ResourceID) async throws -> Resource?
    /// Removes the resource with its policies.
    func deleteResource(_ id: ResourceID) async throws -> Deletion

    func insert(policy: Policy) async throws
    func policies() async throws -> [Policy]
    func policies(forResource id: ResourceID) async throws -> [Policy]
    func deletePolicy(_ id: PolicyID) async throws -> Deletion

    /// The gateway of `site` with `publicKey`, created on first sight (its id stays stable).
    func registerGateway(site: SiteID, name: String, publicKey: WireGuardKey) async throws -> Gateway
    func gateways() async throws -> [Gateway]

    /// The relay called `name`, created on first sight, its region and addresses updated.
    func registerRelay(name: String, region: String, addresses: [String]) async throws -> Relay
    func relays() async throws -> [Relay]

    /// The client of `actor` with `publicKey`. A new client gets the next free tunnel addresses
    /// (read and written in one transaction, so two registrations never get the same ones); a
    /// known client keeps the addresses it was given.
    func registerClient(actor: ActorID, name: String, publicKey: WireGuardKey, allocator: AddressAllocator) async throws -> Client
    func clients() async throws -> [Client]
    func client(_ id: ClientID) async throws -> Client?

    /// Whether a gateway of `site` (or any client, when `site` is nil) is registered with
    /// `publicKey` (an indexed lookup).
    func isRegistered(publicKey: WireGuardKey, gatewayOf site: SiteID?) async throws -> Bool

    func insert(token: Token) async throws
    func tokens() async throws -> [Token]
    func token(hash: [UInt8]) async throws -> Token?
    /// Marks the token revoked; refuses (`StoreError.conflict`) to revoke the last usable admin
    /// token, which would lock every administrator out.
    func revokeToken(_ id: TokenID, at now: UnixTime) async throws -> Deletion
    /// The number of admin tokens usable at `now` (not revoked, not expired).
    func adminTokenCount(now: UnixTime) async throws -> Int

    /// A deployment-wide value (the TURN REST secret): `value` is stored unless one exists; the
    /// stored one is returned.
    func setting(_ key: String, default value: String) async throws -> String
}

/// What a deletion did: whether the entity existed, the policies that went with it (the
/// control channel revokes the authorizations they granted) and the tokens whose subject it was
/// (revoked in the same transaction; the control channel closes their connections).
public struct Deletion: Sendable, Equatable {
    public var found: Bool
    public var removedPolicies: [Policy]
    public var revokedTokens: [TokenID]

    public init(found: Bool, removedPolicies: [Policy] = [], revokedTokens: [TokenID] = []) {
        self.found = found
        self.removedPolicies = removedPolicies
        self.revokedTokens = revokedTokens
    }

    public static let notFound = Deletion(found: false)
}

public enum StoreError: Error, Equatable, CustomStringConvertible {
    /// A referenced entity does not exist; `field` names the reference (`site_id`).
    case unknownReference(field: String)
    /// A uniqueness rule was broken (`field` names it).
    case conflict(field: String, reason: String)
    /// The tunnel address pool has no free address.
    case addressPoolExhausted
    /// The database URL is not one this build supports.
    case unsupportedURL(String)

    public var description: String {
        switch self {
        case .unknownReference(let f): "\(f) refers to nothing"
        case .conflict(let f, let r): "\(f): \(r)"
        case .addressPoolExhausted: "no free tunnel address"
        case .unsupportedURL(let u): "unsupported database URL \(u) (expected sqlite:///PATH)"
        }
    }
}
