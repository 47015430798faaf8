import FZControl
import FZCore
import Foundation
import Portal
import Testing
@testable import FZPortal

@Suite("SQLite store")
struct SQLiteStoreTests {
    @Test("a restart keeps every entity and every client's tunnel addresses")
    func restartKeepsEverything() async throws {
        let tmp = try TempDatabase()
        defer { tmp.cleanup() }
        let actor = PortalActor(id: ActorID("act_alice"), name: "alice", kind: .user)
        let group = Group(id: GroupID("grp_eng"), name: "engineers")
        let site = Site(id: SiteID("site_north"), name: "north")
        let resource = Resource(
            id: ResourceID("res_db"), siteId: site.id, name: "db", address: try ResourceAddress(parsing: "*.db.corp.example"),
            filters: [.tcp(5432...5432), .icmp])
        let policy = Policy(
            id: PolicyID("pol_1"), groupId: group.id, resourceId: resource.id,
            conditions: PolicyConditions(sourceCidrs: [CIDR("203.0.113.0/24")!], timeWindow: try TimeWindow(days: [.monday], startMinute: 60, endMinute: 120)))
        let issued = try IssuedToken.issue(name: "ops", scope: .admin, subject: nil, now: Fixture.now, expiresAt: Fixture.now + .seconds(60))

        var clients: [Client] = []
        var gateway: Gateway
        var relay: Relay
        var secret: String
        do {
            let store = try tmp.open()
            try await store.insert(actor: actor)
            try await store.insert(group: group)
            try await store.insert(membership: Membership(groupId: group.id, actorId: actor.id))
            try await store.insert(site: site)
            try await store.insert(resource: resource)
            try await store.insert(policy: policy)
            try await store.insert(token: issued.token)
            for i in 1...3 {
                clients.append(try await store.registerClient(actor: actor.id, name: "laptop\(i)", publicKey: Fixture.key(UInt8(i)), allocator: AddressAllocator()))
            }
            gateway = try await store.registerGateway(site: site.id, name: "gw-a", publicKey: Fixture.key(100))
            relay = try await store.registerRelay(name: "relay-eu", region: "eu", addresses: ["198.18.0.10:3478", "[2001:db8::1]:3478"])
            secret = try await store.setting("turn_secret", default: "first")
            #expect(try store.journalMode() == "wal")
        }

        let store = try tmp.open()
        #expect(try await store.actors() == [actor])
        #expect(try await store.groups() == [group])
        #expect(try await store.memberships() == [Membership(groupId: group.id, actorId: actor.id)])
        #expect(try await store.groupIDs(ofActor: actor.id) == [group.id])
        #expect(try await store.sites() == [site])
        #expect(try await store.resources() == [resource])
        #expect(try await store.policies() == [policy])
        #expect(try await store.tokens() == [issued.token])
        #expect(try await store.token(hash: issued.secret.hash) == issued.token)
        #expect(try await store.clients() == clients.sorted { $0.id < $1.id })
        #expect(try await store.gateways() == [gateway])
        #expect(try await store.relays() == [relay])
        #expect(try await store.setting("turn_secret", default: "second") == secret)
        #expect(try store.appliedMigrations() == ["v1: entities"])

        // A known client re-registering after the restart keeps its addresses; a new one gets fresh ones.
        let again = try await store.registerClient(actor: actor.id, name: "laptop1", publicKey: Fixture.key(1), allocator: AddressAllocator())
        #expect(again == clients[0])
        let fresh = try await store.registerClient(actor: actor.id, name: "phone", publicKey: Fixture.key(9), allocator: AddressAllocator())
        #expect(!clients.map(\.ipv4).contains(fresh.ipv4) && !clients.map(\.ipv6).contains(fresh.ipv6))
        #expect(try await store.registerGateway(site: site.id, name: "gw-a", publicKey: Fixture.key(100)).id == gateway.id)
    }

    @Test("concurrent registrations never share a tunnel address")
    func concurrentRegistrations() async throws {
        let tmp = try TempDatabase()
        defer { tmp.cleanup() }
        let store = try tmp.open()
        try await store.insert(actor: PortalActor(id: ActorID("act_1"), name: "bot", kind: .serviceAccount))
        let clients = try await withThrowingTaskGroup(of: Client.self) { group in
            for i in 0..<40 {
                group.addTask {
                    try await store.registerClient(actor: ActorID("act_1"), name: "c\(i)", publicKey: Fixture.key(UInt8(i)), allocator: AddressAllocator())
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(clients.map(\.ipv4)).count == 40)
        #expect(Set(clients.map(\.ipv6)).count == 40)
    }

    @Test("client addresses come from a cursor: sequential, never reused before the pool wraps, exhaustion refused, old databases scanned once")
    func addressCursor() async throws {
        let tmp = try TempDatabase()
        defer { tmp.cleanup() }
        let store = try tmp.open()
        // A /28: offsets 1…14.
        let small = AddressAllocator(ipv4Pool: CIDR("10.9.0.0/28")!, ipv6Pool: CIDR("fd00:9::/120")!)
        try await store.insert(actor: PortalActor(id: ActorID("act_a"), name: "a", kind: .user))
        try await store.insert(actor: PortalActor(id: ActorID("act_b"), name: "b", kind: .user))
        func key(_ n: Int) -> WireGuardKey { WireGuardKey(bytes: [UInt8(n), 7] + Array(repeating: 1, count: 30)) }
        var got: [Client] = []
        for i in 1...10 {
            got.append(try await store.registerClient(actor: ActorID(i <= 5 ? "act_a" : "act_b"), name: "c\(i)", publicKey: key(i), allocator: small))
        }
        #expect(got.map(\.ipv4.description) == (1...10).map { "10.9.0.\($0)" })
        #expect(got.map(\.ipv6.description) == (1...10).map { "fd00:9::\(String($0, radix: 16))" })
        #expect(try await store.setting("client_address_cursor", default: "") == "10")
        // Freed addresses (act_a's five clients) are not handed out again until the pool wraps.
        _ = try await store.deleteActor(ActorID("act_a"))
        var next: [String] = []
        for i in 11...19 { next.append(try await store.registerClient(actor: ActorID("act_b"), name: "c\(i)", publicKey: key(i), allocator: small).ipv4.description) }
        #expect(next == ["10.9.0.11", "10.9.0.12", "10.9.0.13", "10.9.0.14", "10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"])
        await #expect(throws: StoreError.self) {
            _ = try await store.registerClient(actor: ActorID("act_b"), name: "full", publicKey: key(20), allocator: small)
        }
        // A database without the cursor (from before it) is scanned once and continues after
        // the highest address in use.
        let other = try TempDatabase()
        defer { other.cleanup() }
        let old = try other.open()
        try await old.insert(actor: PortalActor(id: ActorID("act_c"), name: "c", kind: .user))
        for i in 1...3 { _ = try await old.registerClient(actor: ActorID("act_c"), name: "o\(i)", publicKey: key(i), allocator: small) }
        try await old.deleteSetting("client_address_cursor")
        #expect(try await old.registerClient(actor: ActorID("act_c"), name: "o4", publicKey: key(4), allocator: small).ipv4.description == "10.9.0.4")
        #expect(try await old.setting("client_address_cursor", default: "") == "4")
    }

    @Test("deleting a site removes its resources, gateways and policies in one go and reports the policies")
    func cascade() async throws {
        let tmp = try TempDatabase()
        defer { tmp.cleanup() }
        let store = try tmp.open()
        try await store.insert(group: Group(id: GroupID("g"), name: "g"))
        try await store.insert(site: Site(id: SiteID("s"), name: "s"))
        try await store.insert(resource: Resource(id: ResourceID("r"), siteId: SiteID("s"), name: "r", address: try ResourceAddress(parsing: "10.0.0.1")))
        let p = Policy(id: PolicyID("p"), groupId: GroupID("g"), resourceId: ResourceID("r"))
        try await store.insert(policy: p)
        _ = try await store.registerGateway(site: SiteID("s"), name: "gw", publicKey: Fixture.key(1))
        #expect(try await store.deleteSite(SiteID("s")) == Deletion(found: true, removedPolicies: [p]))
        #expect(try await store.resources().isEmpty)
        #expect(try await store.gateways().isEmpty)
        #expect(try await store.policies().isEmpty)
        #expect(try await store.deleteSite(SiteID("s")) == .notFound)
    }

    @Test("references to missing entities and duplicates are refused with the field named")
    func integrity() async throws {
        let tmp = try TempDatabase()
        defer { tmp.cleanup() }
        let store = try tmp.open()
        await #expect(throws: StoreError.unknownReference(field: "site_id")) {
            try await store.insert(resource: Resource(id: ResourceID("r"), siteId: SiteID("nope"), name: "r", address: .ip(IPAddress("10.0.0.1")!)))
        }
        try await store.insert(group: Group(id: GroupID("g"), name: "g"))
        await #expect(throws: StoreError.unknownReference(field: "resource_id")) {
            try await store.insert(policy: Policy(id: PolicyID("p"), groupId: GroupID("g"), resourceId: ResourceID("nope")))
        }
        await #expect(throws: StoreError.conflict(field: "id", reason: "already exists")) {
            try await store.insert(group: Group(id: GroupID("g"), name: "again"))
        }
        try await store.insert(actor: PortalActor(id: ActorID("a"), name: "a", kind: .user))
        try await store.insert(actor: PortalActor(id: ActorID("b"), name: "b", kind: .user))
        _ = try await store.registerClient(actor: ActorID("a"), name: "x", publicKey: Fixture.key(1), allocator: AddressAllocator())
        await #expect(throws: StoreError.conflict(field: "public_key", reason: "belongs to another actor")) {
            _ = try await store.registerClient(actor: ActorID("b"), name: "x", publicKey: Fixture.key(1), allocator: AddressAllocator())
        }
    }

    @Test("revoking a token keeps it listed but marks when")
    func revoke() async throws {
        let tmp = try TempDatabase()
        defer { tmp.cleanup() }
        let store = try tmp.open()
        let t = try IssuedToken.issue(name: "gw", scope: .site, subject: "s", now: Fixture.now).token
        try await store.insert(token: t)
        #expect(try await store.adminTokenCount(now: Fixture.now) == 0)
        #expect(try await store.revokeToken(t.id, at: Fixture.now + .seconds(5)).found)
        let stored = try await store.token(hash: t.hash)
        #expect(stored?.revokedAt == Fixture.now + .seconds(5))
        #expect(stored?.isValid(at: Fixture.now + .seconds(6)) == false)
        #expect(try await store.revokeToken(TokenID("tok_missing"), at: Fixture.now).found == false)
    }

    @Test("database URLs: sqlite paths are accepted, anything else is refused")
    func urls() throws {
        #expect(try DatabaseURL(parsing: "sqlite:///var/lib/fz/portal.sqlite") == .sqlite(path: "/var/lib/fz/portal.sqlite"))
        #expect(throws: StoreError.self) { try DatabaseURL(parsing: "postgres://db/fz") }
        #expect(throws: StoreError.self) { try DatabaseURL(parsing: "sqlite://") }
    }
}
