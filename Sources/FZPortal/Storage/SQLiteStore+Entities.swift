import FZControl
import FZCore
import Foundation
import GRDB
import Portal

extension SQLiteStore {
    // MARK: Actors, groups, memberships

    public func insert(actor a: PortalActor) async throws {
        try await write { db in
            try db.execute(sql: "INSERT INTO actors (id, name, kind) VALUES (?, ?, ?)", arguments: [a.id.rawValue, a.name, a.kind.rawValue])
        }
    }

    public func actors() async throws -> [PortalActor] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM actors ORDER BY id").map(Rows.actor) }
    }

    public func actor(_ id: ActorID) async throws -> PortalActor? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM actors WHERE id = ?", arguments: [id.rawValue]).map(Rows.actor) }
    }

    /// Also revokes the actor's client tokens: a token must not outlive its subject.
    public func deleteActor(_ id: ActorID) async throws -> Deletion {
        try await write { db in
            var d = try Self.delete(db, table: "actors", id: id.rawValue, policiesWhere: nil)
            if d.found { d.revokedTokens = try Self.revokeTokens(db, scope: .client, subject: id.rawValue) }
            return d
        }
    }

    public func insert(group g: Group) async throws {
        try await write { db in try db.execute(sql: "INSERT INTO groups (id, name) VALUES (?, ?)", arguments: [g.id.rawValue, g.name]) }
    }

    public func groups() async throws -> [Group] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM groups ORDER BY id").map { Group(id: GroupID($0["id"]), name: $0["name"]) }
        }
    }

    public func deleteGroup(_ id: GroupID) async throws -> Deletion {
        try await write { db in try Self.delete(db, table: "groups", id: id.rawValue, policiesWhere: "group_id = ?") }
    }

    public func insert(membership m: Membership) async throws {
        try await write { db in
            try Self.require(db, "groups", m.groupId.rawValue, field: "group_id")
            try Self.require(db, "actors", m.actorId.rawValue, field: "actor_id")
            try db.execute(
                sql: "INSERT INTO memberships (group_id, actor_id) VALUES (?, ?)", arguments: [m.groupId.rawValue, m.actorId.rawValue])
        }
    }

    public func memberships() async throws -> [Membership] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM memberships ORDER BY group_id, actor_id").map {
                Membership(groupId: GroupID($0["group_id"]), actorId: ActorID($0["actor_id"]))
            }
        }
    }

    public func deleteMembership(_ m: Membership) async throws -> Deletion {
        try await write { db in
            try db.execute(
                sql: "DELETE FROM memberships WHERE group_id = ? AND actor_id = ?", arguments: [m.groupId.rawValue, m.actorId.rawValue])
            return Deletion(found: db.changesCount > 0)
        }
    }

    public func groupIDs(ofActor id: ActorID) async throws -> Set<GroupID> {
        try await read { db in
            Set(try String.fetchAll(db, sql: "SELECT group_id FROM memberships WHERE actor_id = ?", arguments: [id.rawValue]).map(GroupID.init))
        }
    }

    // MARK: Sites, resources, policies

    public func insert(site s: Site) async throws {
        try await write { db in try db.execute(sql: "INSERT INTO sites (id, name) VALUES (?, ?)", arguments: [s.id.rawValue, s.name]) }
    }

    public func sites() async throws -> [Site] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM sites ORDER BY id").map { Site(id: SiteID($0["id"]), name: $0["name"]) } }
    }

    public func site(_ id: SiteID) async throws -> Site? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM sites WHERE id = ?", arguments: [id.rawValue]).map { Site(id: SiteID($0["id"]), name: $0["name"]) }
        }
    }

    /// Also revokes the site's tokens, so its gateways are disconnected and cannot register again.
    public func deleteSite(_ id: SiteID) async throws -> Deletion {
        try await write { db in
            var d = try Self.delete(
                db, table: "sites", id: id.rawValue, policiesWhere: "resource_id IN (SELECT id FROM resources WHERE site_id = ?)")
            if d.found { d.revokedTokens = try Self.revokeTokens(db, scope: .site, subject: id.rawValue) }
            return d
        }
    }

    public func insert(resource r: Resource) async throws {
        try await write { db in
            try Self.require(db, "sites", r.siteId.rawValue, field: "site_id")
            try db.execute(
                sql: "INSERT INTO resources (id, site_id, name, address, filters) VALUES (?, ?, ?, ?, ?)",
                arguments: [r.id.rawValue, r.siteId.rawValue, r.name, r.address.description, Rows.filters(r.filters)])
        }
    }

    public func resources() async throws -> [Resource] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM resources ORDER BY id").map(Rows.resource) }
    }

    public func resource(_ id: ResourceID) async throws -> Resource? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM resources WHERE id = ?", arguments: [id.rawValue]).map(Rows.resource) }
    }

    public func deleteResource(_ id: ResourceID) async throws -> Deletion {
        try await write { db in try Self.delete(db, table: "resources", id: id.rawValue, policiesWhere: "resource_id = ?") }
    }

    public func insert(policy p: Policy) async throws {
        let conditions = try Rows.conditions(p.conditions)
        try await write { db in
            try Self.require(db, "groups", p.groupId.rawValue, field: "group_id")
            try Self.require(db, "resources", p.resourceId.rawValue, field: "resource_id")
            try db.execute(
                sql: "INSERT INTO policies (id, group_id, resource_id, conditions) VALUES (?, ?, ?, ?)",
                arguments: [p.id.rawValue, p.groupId.rawValue, p.resourceId.rawValue, conditions])
        }
    }

    public func policies() async throws -> [Policy] {
        try await read { db in try Rows.policies(db, where: "1", []) }
    }

    public func policies(forResource id: ResourceID) async throws -> [Policy] {
        try await read { db in try Rows.policies(db, where: "resource_id = ?", [id.rawValue]) }
    }

    public func deletePolicy(_ id: PolicyID) async throws -> Deletion {
        try await write { db in try Self.delete(db, table: "policies", id: id.rawValue, policiesWhere: "id = ?") }
    }

    // MARK: Gateways, relays, clients

    public func registerGateway(site: SiteID, name: String, publicKey: WireGuardKey) async throws -> Gateway {
        try await write { db in
            try Self.require(db, "sites", site.rawValue, field: "site_id")
            if let row = try Row.fetchOne(
                db, sql: "SELECT * FROM gateways WHERE site_id = ? AND public_key = ?", arguments: [site.rawValue, publicKey.base64])
            {
                var g = try Rows.gateway(row)
                if g.name != name {
                    try db.execute(sql: "UPDATE gateways SET name = ? WHERE id = ?", arguments: [name, g.id.rawValue])
                    g.name = name
                }
                return g
            }
            let g = Gateway(id: .random(prefix: "gw"), siteId: site, name: name, publicKey: publicKey)
            try db.execute(
                sql: "INSERT INTO gateways (id, site_id, name, public_key) VALUES (?, ?, ?, ?)",
                arguments: [g.id.rawValue, site.rawValue, name, publicKey.base64])
            return g
        }
    }

    public func gateways() async throws -> [Gateway] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM gateways ORDER BY id").map(Rows.gateway) }
    }

    public func registerRelay(name: String, region: String, addresses: [String]) async throws -> Relay {
        try await write { db in
            let joined = addresses.joined(separator: ",")
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM relays WHERE name = ?", arguments: [name]) {
                let id: String = row["id"]
                try db.execute(sql: "UPDATE relays SET region = ?, addresses = ? WHERE id = ?", arguments: [region, joined, id])
                return Relay(id: RelayID(id), name: name, region: region, addresses: addresses)
            }
            let r = Relay(id: .random(prefix: "relay"), name: name, region: region, addresses: addresses)
            try db.execute(
                sql: "INSERT INTO relays (id, name, region, addresses) VALUES (?, ?, ?, ?)", arguments: [r.id.rawValue, name, region, joined])
            return r
        }
    }

    public func relays() async throws -> [Relay] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM relays ORDER BY id").map(Rows.relay) }
    }

    public func registerClient(actor: ActorID, name: String, publicKey: WireGuardKey, allocator: AddressAllocator) async throws -> Client {
        try await write { db in
            try Self.require(db, "actors", actor.rawValue, field: "actor_id")
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM clients WHERE public_key = ?", arguments: [publicKey.base64]) {
                var c = try Rows.client(row)
                guard c.actorId == actor else { throw StoreError.conflict(field: "public_key", reason: "belongs to another actor") }
                if c.name != name {
                    try db.execute(sql: "UPDATE clients SET name = ? WHERE id = ?", arguments: [name, c.id.rawValue])
                    c.name = name
                }
                return c
            }
            let (v4, v6) = try Self.allocateAddresses(db, allocator)
            let c = Client(id: .random(prefix: "cli"), actorId: actor, name: name, publicKey: publicKey, ipv4: v4, ipv6: v6)
            try db.execute(
                sql: "INSERT INTO clients (id, actor_id, name, public_key, ipv4, ipv6) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [c.id.rawValue, actor.rawValue, name, publicKey.base64, v4.description, v6.description])
            return c
        }
    }

    /// A free address pair for a new client. From a cursor kept in `settings` (the offset last
    /// handed out), probing forward with the unique indexes on `ipv4`/`ipv6`: O(log n) per
    /// registration while the pool has room near the cursor. Without a cursor (a database from
    /// before it) or after many taken offsets in a row (a nearly full pool) it falls back to one
    /// scan of every address in use, and sets the cursor from what it found.
    static func allocateAddresses(_ db: Database, _ allocator: AddressAllocator) throws -> (IPv4Address, IPv6Address) {
        let cursorKey = "client_address_cursor"
        func taken(_ v4: IPv4Address, _ v6: IPv6Address) throws -> Bool {
            try Bool.fetchOne(
                db, sql: "SELECT EXISTS(SELECT 1 FROM clients WHERE ipv4 = ?) OR EXISTS(SELECT 1 FROM clients WHERE ipv6 = ?)",
                arguments: [v4.description, v6.description]) ?? true
        }
        func remember(_ offset: UInt64) throws {
            try db.execute(sql: "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", arguments: [cursorKey, String(offset)])
        }
        if let text = try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = ?", arguments: [cursorKey]), var offset = UInt64(text) {
            for _ in 0..<64 {
                offset = allocator.offset(after: offset)
                guard let (v4, v6) = allocator.addresses(at: offset) else { break }
                if try !taken(v4, v6) {
                    try remember(offset)
                    return (v4, v6)
                }
            }
        }
        let used4 = Set(try String.fetchAll(db, sql: "SELECT ipv4 FROM clients").compactMap(IPv4Address.init))
        let used6 = Set(try String.fetchAll(db, sql: "SELECT ipv6 FROM clients").compactMap(IPv6Address.init))
        guard let v4 = allocator.nextIPv4(used: used4), let v6 = allocator.nextIPv6(used: used6) else {
            throw StoreError.addressPoolExhausted
        }
        if let offset = allocator.offset(of: v4) { try remember(offset) }
        return (v4, v6)
    }

    public func clients() async throws -> [Client] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM clients ORDER BY id").map(Rows.client) }
    }

    public func client(_ id: ClientID) async throws -> Client? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM clients WHERE id = ?", arguments: [id.rawValue]).map(Rows.client) }
    }

    // MARK: Tokens and settings

    public func insert(token t: Token) async throws {
        try await write { db in
            try db.execute(
                sql: """
                    INSERT INTO tokens (id, name, scope, subject, hash, created_at, expires_at, revoked_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    t.id.rawValue, t.name, t.scope.rawValue, t.subject, Data(t.hash), t.createdAt.seconds, t.expiresAt?.seconds,
                    t.revokedAt?.seconds,
                ])
        }
    }

    public func tokens() async throws -> [Token] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM tokens ORDER BY created_at, id").map(Rows.token) }
    }

    public func token(hash: [UInt8]) async throws -> Token? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM tokens WHERE hash = ?", arguments: [Data(hash)]).map(Rows.token) }
    }

    public func revokeToken(_ id: TokenID, at now: UnixTime) async throws -> Deletion {
        try await write { db in
            // The check and the update in one transaction: two concurrent revocations of the
            // last two admin tokens cannot both pass.
            let scope = try String.fetchOne(
                db, sql: "SELECT scope FROM tokens WHERE id = ? AND revoked_at IS NULL", arguments: [id.rawValue])
            if scope == TokenScope.admin.rawValue, try Self.usableAdminTokens(db, now: now) <= 1,
                try Self.isUsable(db, id: id, now: now)
            {
                throw StoreError.conflict(
                    field: "id", reason: "the last admin token cannot be revoked: create another one first (or run fz-portal admin-token)")
            }
            try db.execute(
                sql: "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", arguments: [now.seconds, id.rawValue])
            return Deletion(found: db.changesCount > 0)
        }
    }

    /// Revokes every not yet revoked token of `scope` whose subject is `subject`; returns their ids.
    /// The revocation time is the database's clock: the caller is a deletion, not a timed decision.
    static func revokeTokens(_ db: Database, scope: TokenScope, subject: String) throws -> [TokenID] {
        let ids = try String.fetchAll(
            db, sql: "SELECT id FROM tokens WHERE scope = ? AND subject = ? AND revoked_at IS NULL ORDER BY id",
            arguments: [scope.rawValue, subject])
        try db.execute(
            sql: "UPDATE tokens SET revoked_at = CAST(strftime('%s','now') AS INTEGER) WHERE scope = ? AND subject = ? AND revoked_at IS NULL",
            arguments: [scope.rawValue, subject])
        return ids.map(TokenID.init)
    }

    public func adminTokenCount(now: UnixTime) async throws -> Int {
        try await read { db in try Self.usableAdminTokens(db, now: now) }
    }

    private static func usableAdminTokens(_ db: Database, now: UnixTime) throws -> Int {
        try Int.fetchOne(
            db, sql: "SELECT COUNT(*) FROM tokens WHERE scope = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
            arguments: [now.seconds]) ?? 0
    }

    private static func isUsable(_ db: Database, id: TokenID, now: UnixTime) throws -> Bool {
        try Bool.fetchOne(
            db, sql: "SELECT COUNT(*) > 0 FROM tokens WHERE id = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
            arguments: [id.rawValue, now.seconds]) ?? false
    }

    public func setting(_ key: String, default value: String) async throws -> String {
        try await write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)", arguments: [key, value])
            return try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = ?", arguments: [key]) ?? value
        }
    }

    /// Removes a setting (tests of migrations from older databases).
    func deleteSetting(_ key: String) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM settings WHERE key = ?", arguments: [key]) }
    }

    public func isRegistered(publicKey: WireGuardKey, gatewayOf site: SiteID?) async throws -> Bool {
        try await read { db in
            if let site {
                return try Bool.fetchOne(
                    db, sql: "SELECT EXISTS(SELECT 1 FROM gateways WHERE site_id = ? AND public_key = ?)",
                    arguments: [site.rawValue, publicKey.base64]) ?? false
            }
            return try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM clients WHERE public_key = ?)", arguments: [publicKey.base64]) ?? false
        }
    }
}
