import FZControl
import FZCore
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Portal
import Prometheus
import Testing
import FZDaemon
@testable import FZPortal

/// A portal application on a temporary database with a known admin token.
struct APIHarness {
    let tmp: TempDatabase
    let store: SQLiteStore
    let admin: String
    let readiness = Readiness()

    init() async throws {
        tmp = try TempDatabase()
        store = try tmp.open()
        admin = try await PortalApplication.bootstrapAdminToken(store: store, now: Fixture.now)!
    }

    func app() -> some ApplicationProtocol {
        let router = PortalApplication.router(
            store: store, clock: WallClock { Fixture.now }, readiness: readiness, registry: PrometheusCollectorRegistry())
        return Application(router: router, logger: Logger(label: "test"))
    }
}

struct Reply {
    var status: HTTPResponse.Status
    var json: Any?
    var object: [String: Any] { json as? [String: Any] ?? [:] }
    var array: [[String: Any]] { json as? [[String: Any]] ?? [] }
    subscript(string key: String) -> String? { object[key] as? String }
    subscript(strings key: String) -> [String]? { object[key] as? [String] }
    var firstAddress: String? { array.first?["address"] as? String }
}

extension TestClientProtocol {
    func call(_ method: HTTPRequest.Method, _ uri: String, token: String?, body: String? = nil) async throws -> Reply {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        return try await execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(bytes: Array($0.utf8)) }) { r in
            let data = Data(r.body.readableBytesView)
            return Reply(status: r.status, json: data.isEmpty ? nil : try? JSONSerialization.jsonObject(with: data))
        }
    }
}

@Suite("Admin REST API")
struct AdminAPITests {
    @Test("requests without a valid admin token get 401 with a JSON error")
    func unauthorized() async throws {
        let h = try await APIHarness()
        defer { h.tmp.cleanup() }
        let relay = try IssuedToken.issue(name: "r", scope: .relay, subject: nil, now: Fixture.now)
        try await h.store.insert(token: relay.token)
        try await h.app().test(.router) { client async throws in
            #expect(try await client.call(.get, "/api/v1/sites", token: nil).status == .unauthorized)
            #expect(try await client.call(.get, "/api/v1/sites", token: "fz_garbage")[string: "error"] == "unauthorized")
            #expect(try await client.call(.get, "/api/v1/sites", token: relay.secret.presented).status == .unauthorized)
            #expect(try await client.call(.get, "/api/v1/sites", token: h.admin).status == .ok)
        }
    }

    @Test("an admin builds a site, resource, group, member and policy, lists and deletes them")
    func crud() async throws {
        let h = try await APIHarness()
        defer { h.tmp.cleanup() }
        try await h.app().test(.router) { c async throws in
            let site = try await c.call(.post, "/api/v1/sites", token: h.admin, body: #"{"name": "north"}"#)
            #expect(site.status == .created)
            let siteID = try #require(site[string: "id"])
            let res = try await c.call(
                .post, "/api/v1/resources", token: h.admin,
                body: #"{"name": "db", "site_id": "\#(siteID)", "address": "*.db.corp.example", "filters": ["tcp/5432", "icmp"]}"#)
            #expect(res.status == .created)
            #expect(res[strings: "filters"] == ["tcp/5432", "icmp"])
            let resID = try #require(res[string: "id"])
            let group = try await c.call(.post, "/api/v1/groups", token: h.admin, body: #"{"name": "eng"}"#)
            let groupID = try #require(group[string: "id"])
            let actor = try await c.call(.post, "/api/v1/actors", token: h.admin, body: #"{"name": "alice", "kind": "user"}"#)
            let actorID = try #require(actor[string: "id"])
            #expect(try await c.call(.post, "/api/v1/groups/\(groupID)/members", token: h.admin, body: #"{"actor_id": "\#(actorID)"}"#).status == .created)
            let policy = try await c.call(
                .post, "/api/v1/policies", token: h.admin,
                body: #"{"group_id": "\#(groupID)", "resource_id": "\#(resID)", "conditions": {"source_cidrs": ["203.0.113.0/24"], "time_window": {"days": ["mon"], "start": "08:00", "end": "18:00"}}}"#)
            #expect(policy.status == .created)
            let policyID = try #require(policy[string: "id"])

            #expect(try await c.call(.get, "/api/v1/sites", token: h.admin).array.count == 1)
            #expect(try await c.call(.get, "/api/v1/resources", token: h.admin).firstAddress == "*.db.corp.example")
            #expect(try await c.call(.get, "/api/v1/memberships", token: h.admin).array.count == 1)
            #expect(try await c.call(.get, "/api/v1/policies", token: h.admin).array.count == 1)
            #expect(try await c.call(.get, "/api/v1/gateways", token: h.admin).array.isEmpty)
            #expect(try await c.call(.get, "/api/v1/relays", token: h.admin).array.isEmpty)

            #expect(try await c.call(.delete, "/api/v1/policies/\(policyID)", token: h.admin).status == .noContent)
            #expect(try await c.call(.delete, "/api/v1/policies/\(policyID)", token: h.admin).status == .notFound)
            #expect(try await c.call(.delete, "/api/v1/groups/\(groupID)/members/\(actorID)", token: h.admin).status == .noContent)
            #expect(try await c.call(.delete, "/api/v1/sites/\(siteID)", token: h.admin).status == .noContent)
            #expect(try await c.call(.get, "/api/v1/resources", token: h.admin).array.isEmpty)
        }
    }

    @Test("bad input is a 400 naming the field")
    func badInput() async throws {
        let h = try await APIHarness()
        defer { h.tmp.cleanup() }
        try await h.app().test(.router) { c async throws in
            let missing = try await c.call(.post, "/api/v1/resources", token: h.admin, body: #"{"name": "db", "address": "10.0.0.1"}"#)
            #expect(missing.status == .badRequest)
            #expect(missing[string: "field"] == "site_id")
            let badCIDR = try await c.call(.post, "/api/v1/resources", token: h.admin, body: #"{"name": "db", "site_id": "s", "address": "10.0.0.0/99"}"#)
            #expect(badCIDR[string: "field"] == "address")
            let unknownSite = try await c.call(.post, "/api/v1/resources", token: h.admin, body: #"{"name": "db", "site_id": "s", "address": "10.0.0.1"}"#)
            #expect(unknownSite.status == .badRequest)
            #expect(unknownSite[string: "field"] == "site_id")
            let empty = try await c.call(.post, "/api/v1/sites", token: h.admin, body: #"{"name": "  "}"#)
            #expect(empty[string: "field"] == "name")
            let garbage = try await c.call(.post, "/api/v1/sites", token: h.admin, body: "{nope")
            #expect(garbage.status == .badRequest)
            #expect(garbage[string: "field"] == "body")
            let scope = try await c.call(.post, "/api/v1/tokens", token: h.admin, body: #"{"name": "x", "scope": "root"}"#)
            #expect(scope[string: "field"] == "scope")
        }
    }

    @Test("validation is strict: mistyped addresses, host bits, wildcard-only and numeric names, control characters, too many filters, zero keys, out-of-range numbers are refused naming the field; what is stored is what was sent")
    func strictValidation() async throws {
        let h = try await APIHarness()
        defer { h.tmp.cleanup() }
        try await h.app().test(.router) { c async throws in
            let site = try #require(try await c.call(.post, "/api/v1/sites", token: h.admin, body: #"{"name": "s"}"#)[string: "id"])
            func resource(_ address: String, filters: [String] = []) async throws -> Reply {
                let f = filters.map { "\"\($0)\"" }.joined(separator: ",")
                return try await c.call(
                    .post, "/api/v1/resources", token: h.admin, body: #"{"name": "r", "site_id": "\#(site)", "address": "\#(address)", "filters": [\#(f)]}"#)
            }
            for bad in ["300.1.1.1", "1.2.3", "01.2.3.4", "-a.example", "a-.example", "*", "corp.*", "10.0.0.1/24", "fd00::1/64", "db"] {
                let r = try await resource(bad)
                #expect(r.status == .badRequest, "\(bad)")
                #expect(r[string: "field"] == "address", "\(bad)")
            }
            for good in ["10.0.0.0/24", "10.0.0.1", "fd00::/64", "db.corp.example", "*.corp.example", "**.corp.example"] {
                let r = try await resource(good)
                #expect(r.status == .created, "\(good)")
                #expect(r[string: "address"] == good, "stored as sent: \(good)")
            }
            let many = try await resource("10.0.0.0/24", filters: (1...65).map { "tcp/\($0)" })
            #expect(many[string: "field"] == "filters")
            #expect(try await resource("10.0.0.0/24", filters: (1...64).map { "tcp/\($0)" }).status == .created)
            let nul = try await c.call(.post, "/api/v1/sites", token: h.admin, body: #"{"name": "a\u0000b"}"#)
            #expect(nul.status == .badRequest)
            #expect(nul[string: "field"] == "name")
            let huge = try await c.call(.post, "/api/v1/tokens", token: h.admin, body: #"{"name": "t", "scope": "admin", "expires_at": 9223372036854775808}"#)
            #expect(huge.status == .badRequest)
            #expect(huge[string: "field"] == "expires_at")
            #expect(throws: ValidationError.self) { try WireGuardKey(base64: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=") }
        }
    }

    @Test("a created token's secret is returned once, works, is never listed, and stops working when revoked")
    func tokens() async throws {
        let h = try await APIHarness()
        defer { h.tmp.cleanup() }
        try await h.app().test(.router) { c async throws in
            let created = try await c.call(.post, "/api/v1/tokens", token: h.admin, body: #"{"name": "second admin", "scope": "admin"}"#)
            #expect(created.status == .created)
            let secret = try #require(created[string: "secret"])
            let tokenObject = created.object["token"] as? [String: Any]
            let id = try #require(tokenObject?["id"] as? String)
            #expect(try await c.call(.get, "/api/v1/sites", token: secret).status == .ok)
            let listed = try await c.call(.get, "/api/v1/tokens", token: h.admin).array
            #expect(listed.count == 2)
            #expect(listed.allSatisfy { $0["secret"] == nil && $0["hash"] == nil })
            #expect(try await c.call(.delete, "/api/v1/tokens/\(id)", token: h.admin).status == .noContent)
            #expect(try await c.call(.get, "/api/v1/sites", token: secret).status == .unauthorized)
            let badSubject = try await c.call(.post, "/api/v1/tokens", token: h.admin, body: #"{"name": "gw", "scope": "site", "subject": "site_nope"}"#)
            #expect(badSubject[string: "field"] == "subject")
        }
    }

    @Test("a misspelt or unknown field is refused naming it, never ignored (a policy would grant unconditionally)")
    func unknownFieldsAreRefused() async throws {
        let h = try await APIHarness()
        defer { h.tmp.cleanup() }
        try await h.app().test(.router) { c async throws in
            let site = try await c.call(.post, "/api/v1/sites", token: h.admin, body: #"{"name": "s"}"#)
            let siteID = try #require(site[string: "id"])
            let res = try await c.call(
                .post, "/api/v1/resources", token: h.admin, body: #"{"name": "db", "site_id": "\#(siteID)", "address": "10.0.0.5"}"#)
            let resID = try #require(res[string: "id"])
            let group = try await c.call(.post, "/api/v1/groups", token: h.admin, body: #"{"name": "g"}"#)
            let groupID = try #require(group[string: "id"])
            func policy(_ extra: String) async throws -> Reply {
                try await c.call(.post, "/api/v1/policies", token: h.admin,
                                 body: #"{"group_id": "\#(groupID)", "resource_id": "\#(resID)", \#(extra)}"#)
            }
            let cases: [(String, String)] = [
                (#""conditions": {"source_cidr": ["10.0.0.0/8"]}"#, "conditions.source_cidr"),
                (#""conditions": {"timewindow": {"start": "08:00", "end": "18:00"}}"#, "conditions.timewindow"),
                (#""condition": {"source_cidrs": ["10.0.0.0/8"]}"#, "condition"),
                (#""conditions": {"time_window": {"days": ["mon"], "start": "08:00", "end": "18:00", "zone": "CET"}}"#,
                 "conditions.time_window.zone"),
                (#""conditions": {"source_cidrs": []}"#, "conditions.source_cidrs"),
            ]
            for (extra, field) in cases {
                let r = try await policy(extra)
                #expect(r.status == .badRequest, "\(extra)")
                #expect(r[string: "field"] == field, "\(extra)")
            }
            #expect(try await c.call(.get, "/api/v1/policies", token: h.admin).array.isEmpty, "nothing was stored")
            #expect(try await policy(#""conditions": {"source_cidrs": ["10.0.0.0/8"]}"#).status == .created)
            let typo = try await c.call(.post, "/api/v1/sites", token: h.admin, body: #"{"name": "t", "nmae": "x"}"#)
            #expect(typo.status == .badRequest && typo[string: "field"] == "nmae")
        }
    }

    @Test("the last usable admin token cannot be revoked; one of two can")
    func lastAdminTokenIsKept() async throws {
        let h = try await APIHarness()
        defer { h.tmp.cleanup() }
        try await h.app().test(.router) { c async throws in
            let first = try #require(try await c.call(.get, "/api/v1/tokens", token: h.admin).array.first?["id"] as? String)
            let refused = try await c.call(.delete, "/api/v1/tokens/\(first)", token: h.admin)
            #expect(refused.status == .conflict)
            #expect(refused[string: "field"] == "id")
            #expect(try await c.call(.get, "/api/v1/sites", token: h.admin).status == .ok, "still works")
            let second = try await c.call(.post, "/api/v1/tokens", token: h.admin, body: #"{"name": "second", "scope": "admin"}"#)
            let secret = try #require(second[string: "secret"])
            #expect(try await c.call(.delete, "/api/v1/tokens/\(first)", token: secret).status == .noContent)
            let secondID = try #require((second.object["token"] as? [String: Any])?["id"] as? String)
            #expect(try await c.call(.delete, "/api/v1/tokens/\(secondID)", token: secret).status == .conflict)
        }
    }

    @Test("the initial admin token is issued only on a database without one")
    func bootstrapOnce() async throws {
        let h = try await APIHarness()
        defer { h.tmp.cleanup() }
        #expect(h.admin.hasPrefix("fz_"))
        #expect(try await PortalApplication.bootstrapAdminToken(store: h.store, now: Fixture.now) == nil)
        #expect(try await PortalApplication.bootstrapAdminToken(store: h.tmp.open(), now: Fixture.now) == nil)
    }

    @Test("health, readiness and metrics answer without a token")
    func probes() async throws {
        let h = try await APIHarness()
        defer { h.tmp.cleanup() }
        try await h.app().test(.router) { c async throws in
            #expect(try await c.call(.get, "/healthz", token: nil).status == .ok)
            #expect(try await c.call(.get, "/readyz", token: nil).status == .serviceUnavailable)
            h.readiness.set(true)
            #expect(try await c.call(.get, "/readyz", token: nil).status == .ok)
            #expect(try await c.call(.get, "/metrics", token: nil).status == .ok)
        }
    }
}
