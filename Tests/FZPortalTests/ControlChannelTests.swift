import FZControl
import Crypto
import FZCore
import Foundation
import Hummingbird
import HummingbirdTesting
import HummingbirdWSClient
import Logging
import Portal
import Prometheus
import Testing
import FZCrypto
@testable import FZPortal

/// A live portal (real listener, real WebSockets) with one site, one resource, an actor allowed
/// to reach it by policy, and tokens for gateways, clients and relays.
struct ControlHarness {
    let api: APIHarness
    var store: SQLiteStore { api.store }
    let site = Site(id: SiteID("site_a"), name: "a")
    let resource: Resource
    let policy: Policy
    let alice = PortalActor(id: ActorID("act_alice"), name: "alice", kind: .user)
    let mallory = PortalActor(id: ActorID("act_mallory"), name: "mallory", kind: .user)
    let siteToken: String
    let aliceToken: String
    let malloryToken: String
    let relayToken: String
    /// The portal's wall clock (fixed unless a test moves it).
    var clock = WallClock { Fixture.now }
    var newKeysPerTokenPerHour = 100

    init() async throws {
        api = try await APIHarness()
        let store = api.store
        resource = Resource(id: ResourceID("res_db"), siteId: site.id, name: "db", address: try ResourceAddress(parsing: "10.0.0.0/24"), filters: [.tcp(5432...5432)])
        policy = Policy(id: PolicyID("pol_eng_db"), groupId: GroupID("grp_eng"), resourceId: resource.id)
        try await store.insert(site: site)
        try await store.insert(resource: resource)
        try await store.insert(actor: alice)
        try await store.insert(actor: mallory)
        try await store.insert(group: Group(id: GroupID("grp_eng"), name: "eng"))
        try await store.insert(membership: Membership(groupId: GroupID("grp_eng"), actorId: alice.id))
        try await store.insert(policy: policy)
        func issue(_ scope: TokenScope, _ subject: String?) async throws -> String {
            let t = try IssuedToken.issue(name: "t", scope: scope, subject: subject, now: Fixture.now)
            try await store.insert(token: t.token)
            return t.secret.presented
        }
        siteToken = try await issue(.site, site.id.rawValue)
        aliceToken = try await issue(.client, alice.id.rawValue)
        malloryToken = try await issue(.client, mallory.id.rawValue)
        relayToken = try await issue(.relay, nil)
    }

    func app() -> some ApplicationProtocol {
        var control = ControlConfiguration(gatewayReplyTimeout: .seconds(5), maxMessageBytes: 4096, heartbeat: .seconds(5))
        control.maxNewKeysPerTokenPerHour = newKeysPerTokenPerHour
        let router = PortalApplication.router(
            store: store, clock: clock, readiness: api.readiness, registry: PrometheusCollectorRegistry(),
            control: control)
        return PortalApplication.application(router: router, host: "127.0.0.1", port: 0, logger: Logger(label: "test"), control: control)
    }

    func run(_ body: @escaping @Sendable (Int, any TestClientProtocol) async throws -> Void) async throws {
        defer { api.tmp.cleanup() }
        try await app().test(.live) { client in
            try await body(try #require(client.port), client)
        }
    }

    static func url(_ port: Int, _ role: String, _ params: [String: String]) -> String {
        let q = params.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)" }
        return "ws://localhost:\(port)/api/v1/ws/\(role)" + (q.isEmpty ? "" : "?" + q.joined(separator: "&"))
    }

    /// A connected peer whose `init` has arrived.
    func peer(_ port: Int, _ role: String, token: String, _ params: [String: String]) async throws -> (ControlPeer, Message) {
        let p = ControlPeer(url: Self.url(port, role, params), token: token)
        return (p, try await p.next("init"))
    }

    func gateway(_ port: Int, key: UInt8) async throws -> (ControlPeer, String) {
        let (p, m) = try await peer(port, "gateway", token: siteToken, ["public_key": Fixture.key(key).base64, "name": "gw\(key)"])
        return (p, try #require(m["gateway_id"]))
    }

    func client(_ port: Int, key: UInt8, token: String? = nil) async throws -> (ControlPeer, Message) {
        try await peer(port, "client", token: token ?? aliceToken, ["public_key": Fixture.key(key).base64])
    }
}

let requestDB = #"{"v":1,"type":"request_access","resource_id":"res_db"}"#

/// Requests access and plays the gateway's part; returns the id of the gateway that was chosen.
func grant(_ client: ControlPeer, _ gateways: [String: ControlPeer], expected: String) async throws -> (authorize: Message, granted: Message) {
    client.send(requestDB)
    let gw = try #require(gateways[expected])
    let auth = try await gw.next("authorize")
    gw.send(#"{"v":1,"type":"authorized","request_id":"\#(auth["request_id"]!)"}"#)
    let granted = try await client.next("access_granted")
    #expect(granted["gateway_id"] == expected)
    return (auth, granted)
}

@Suite("Control channel (live WebSockets)")
struct ControlChannelTests {
    @Test("two gateways of a site alternate; when one leaves, its clients hear within 1 s and new requests go to the other")
    func roundRobinAndFailover() async throws {
        let h = try await ControlHarness()
        try await h.run { port, _ in
            let (gwA, idA) = try await h.gateway(port, key: 101)
            let (gwB, idB) = try await h.gateway(port, key: 102)
            let gateways = [idA: gwA, idB: gwB]
            let order = [idA, idB].sorted()
            let (c1, init1) = try await h.client(port, key: 1)
            let (c2, _) = try await h.client(port, key: 2)
            #expect(init1.array("resources").map { $0["id"] as? String } == ["res_db"])
            let tunnel = init1.dict("tunnel")

            let (auth, granted) = try await grant(c1, gateways, expected: order[0])
            #expect(auth["client_id"] == init1["client_id"])
            #expect(auth["client_public_key"] == Fixture.key(1).base64)
            #expect(auth.object["client_tunnel_ips"] as? [String] == [tunnel["ipv4"] as! String, tunnel["ipv6"] as! String])
            #expect(auth.object["filters"] as? [String] == ["tcp/5432"])
            #expect(Base64.decode(try #require(auth["preshared_key"]))?.count == 32)
            #expect(granted["preshared_key"] == auth["preshared_key"])
            #expect(NSDictionary(dictionary: granted.dict("ice_credentials")) == NSDictionary(dictionary: auth.dict("ice_credentials")))
            #expect(granted["gateway_public_key"] == Fixture.key(order[0] == idA ? 101 : 102).base64)
            _ = try await grant(c2, gateways, expected: order[1])
            // c2 asks again: the rotation picks the other gateway, which replaces (and revokes) the old one.
            _ = try await grant(c2, gateways, expected: order[0])
            let replaced = try await #require(gateways[order[1]]).next("revoke", timeout: .seconds(1))
            #expect(replaced["resource_id"] == "res_db")

            // ICE candidates are relayed both ways between the paired client and gateway.
            let first = try #require(gateways[order[0]])
            c1.send(#"{"v":1,"type":"ice_candidates","gateway_id":"\#(order[0])","candidates":["candidate:1 1 udp 1 198.18.0.5 4000 typ host"]}"#)
            let atGateway = try await first.next("ice_candidates")
            #expect(atGateway["client_id"] == init1["client_id"])
            first.send(#"{"v":1,"type":"ice_candidates","client_id":"\#(init1["client_id"]!)","candidates":["candidate:2 1 udp 1 198.18.0.9 5000 typ srflx"]}"#)
            #expect(try await c1.next("ice_candidates")["gateway_id"] == order[0])

            // The first gateway leaves: both clients (each now has its authorization through it) hear it.
            first.close()
            for c in [c1, c2] {
                let p = try await c.next("presence", timeout: .seconds(1))
                #expect(p["gateway_id"] == order[0])
                #expect(p.object["online"] as? Bool == false)
            }
            for c in [c1, c2, c1] { _ = try await grant(c, gateways, expected: order[1]) }
            for p in [c1, c2, gwA, gwB] { p.close() }
        }
    }

    @Test("grants to one client connection through one gateway share ICE credentials and preshared key; a new connection gets fresh ones")
    func oneConnectionPerClientAndGateway() async throws {
        let h = try await ControlHarness()
        try await h.run { port, _ in
            let (gw, id) = try await h.gateway(port, key: 101)
            let (c1, _) = try await h.client(port, key: 1)
            let (_, first) = try await grant(c1, [id: gw], expected: id)
            let (auth, again) = try await grant(c1, [id: gw], expected: id)
            #expect(again["preshared_key"] == first["preshared_key"])
            #expect(auth["preshared_key"] == first["preshared_key"])
            #expect(NSDictionary(dictionary: again.dict("ice_credentials")) == NSDictionary(dictionary: first.dict("ice_credentials")))
            c1.close()
            // The same client (same key) on a new connection: it restarted, both sides start afresh.
            let (c2, _) = try await h.client(port, key: 1)
            let (_, fresh) = try await grant(c2, [id: gw], expected: id)
            #expect(fresh["preshared_key"] != first["preshared_key"])
            #expect(NSDictionary(dictionary: fresh.dict("ice_credentials")) != NSDictionary(dictionary: first.dict("ice_credentials")))
            for p in [c2, gw] { p.close() }
        }
    }

    @Test("a denied or unknown resource gets access_denied and nothing reaches any gateway")
    func denied() async throws {
        let h = try await ControlHarness()
        try await h.run { port, _ in
            let (gw, _) = try await h.gateway(port, key: 101)
            let (mallory, initM) = try await h.client(port, key: 3, token: h.malloryToken)
            #expect(initM.array("resources").isEmpty)
            mallory.send(requestDB)
            let denied = try await mallory.next("access_denied")
            #expect(denied["reason"] == "forbidden")
            #expect(denied["resource_id"] == "res_db")
            mallory.send(#"{"v":1,"type":"request_access","resource_id":"res_nope"}"#)
            #expect(try await mallory.next("access_denied")["reason"] == "not_found")
            // Messages to one peer are ordered: the gateway's next message is the pong.
            gw.send(#"{"v":1,"type":"ping"}"#)
            #expect(try await gw.nextAny().type == "pong")

            // Allowed, but no gateway online: offline.
            gw.close()
            #expect(await gw.closed())
            let (alice, _) = try await h.client(port, key: 1)
            alice.send(requestDB)
            #expect(try await alice.next("access_denied")["reason"] == "offline")
            alice.close()
            mallory.close()
        }
    }

    @Test("deleting a policy revokes the authorization at the gateway within 1 s")
    func revokeOnPolicyDelete() async throws {
        let h = try await ControlHarness()
        try await h.run { port, api in
            let (gw, id) = try await h.gateway(port, key: 101)
            let (c, initC) = try await h.client(port, key: 1)
            _ = try await grant(c, [id: gw], expected: id)
            #expect(try await api.call(.delete, "/api/v1/policies/\(h.policy.id)", token: h.api.admin).status == .noContent)
            let revoke = try await gw.next("revoke", timeout: .seconds(1))
            #expect(revoke["client_id"] == initC["client_id"])
            #expect(revoke["resource_id"] == "res_db")
            c.send(requestDB)
            #expect(try await c.next("access_denied")["reason"] == "forbidden")
            gw.close()
            c.close()
        }
    }

    @Test("a relay that connects is pushed to clients, appears in the next init, and its TURN credentials verify")
    func relays() async throws {
        let h = try await ControlHarness()
        try await h.run { port, _ in
            let (early, _) = try await h.client(port, key: 1)
            let (relay, initR) = try await h.peer(
                port, "relay", token: h.relayToken, ["name": "relay-eu", "region": "eu", "addresses": "198.18.0.10:3478,[2001:db8::1]:3478"])
            let secret = try await h.store.setting("turn_secret", default: "unused")
            #expect(initR["turn_secret"] == secret)
            #expect(initR["region"] == "eu")
            let relayID = try #require(initR["relay_id"])
            let pushed = try await early.next("presence", timeout: .seconds(1))
            #expect(pushed["relay_id"] == relayID)
            #expect(pushed.object["online"] as? Bool == true)

            let (late, initC) = try await h.client(port, key: 2)
            let relays = initC.array("relays")
            #expect(relays.map { $0["id"] as? String } == [relayID])
            #expect(relays.first?["addresses"] as? [String] == ["198.18.0.10:3478", "[2001:db8::1]:3478"])
            let username = try #require(relays.first?["username"] as? String)
            let password = try #require(relays.first?["password"] as? String)
            #expect(username.hasSuffix(":\(initC["client_id"]!)"))
            #expect(Int64(username.split(separator: ":")[0])! > Fixture.now.seconds)
            let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(username.utf8), using: SymmetricKey(data: Array(secret.utf8)))
            #expect(password == Data(mac).base64EncodedString())

            relay.close()
            for c in [early, late] {
                let p = try await c.next("presence", timeout: .seconds(1))
                #expect(p["relay_id"] == relayID)
                #expect(p.object["online"] as? Bool == false)
            }
            early.close()
            late.close()
        }
    }

    @Test("wrong tokens are refused before the upgrade; bad messages get an error and a close; storage is untouched")
    func badInput() async throws {
        let h = try await ControlHarness()
        try await h.run { port, api in
            let key = Fixture.key(9).base64.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            #expect(try await api.call(.get, "/api/v1/ws/gateway?public_key=\(key)", token: "fz_garbage").status == .unauthorized)
            #expect(try await api.call(.get, "/api/v1/ws/gateway?public_key=\(key)", token: h.aliceToken).status == .unauthorized)
            #expect(try await api.call(.get, "/api/v1/ws/gateway?public_key=nope", token: h.siteToken)[string: "field"] == "public_key")
            for (role, token) in [("gateway", "fz_garbage"), ("gateway", h.aliceToken), ("client", h.siteToken), ("relay", h.api.admin)] {
                let p = ControlPeer(url: ControlHarness.url(port, role, ["public_key": Fixture.key(9).base64, "name": "x", "region": "r", "addresses": "1.2.3.4:3478"]), token: token)
                await #expect(throws: (any Error).self) { _ = try await p.task.value }
            }
            let badKey = ControlPeer(url: ControlHarness.url(port, "gateway", ["public_key": "nope"]), token: h.siteToken)
            await #expect(throws: (any Error).self) { _ = try await badKey.task.value }
            #expect(try await h.store.gateways().isEmpty)
            #expect(try await h.store.clients().isEmpty)

            let (_, _) = try await h.gateway(port, key: 101)
            let before = (try await h.store.gateways(), try await h.store.clients(), try await h.store.policies())
            let cases: [(String, String)] = [
                ("{nope", "malformed"),
                (#"{"v":1,"type":"make_coffee"}"#, "unknown_type"),
                (#"{"v":1,"type":"authorized"}"#, "unknown_type"),  // a gateway message from a client
                (#"{"v":2,"type":"ping"}"#, "unsupported_version"),
                (#"{"v":1,"type":"request_access","resource_id":7}"#, "malformed"),
                (#"{"v":1,"type":"ping","pad":"\#(String(repeating: "x", count: 5000))"}"#, "too_large"),
            ]
            for (i, (text, code)) in cases.enumerated() {
                let (c, _) = try await h.client(port, key: UInt8(10 + i))
                c.send(text)
                let error = try await c.nextAny()
                #expect(error.type == "error", "\(code)")
                #expect(error["code"] == code)
                #expect(await c.closed(), "\(code)")
            }
            let after = (try await h.store.gateways(), try await h.store.clients(), try await h.store.policies())
            #expect(before.0 == after.0 && before.2 == after.2)
            #expect(after.1.count == before.1.count + cases.count)  // only the connections' own registrations
        }
    }
}

@Suite("Control messages")
struct ControlMessageTests {
    @Test("inbound messages decode by role; anything else is a named violation")
    func decoding() {
        #expect(InboundDecoder.decode(#"{"v":1,"type":"ping"}"#, role: .relay) == .success(.relay(.ping)))
        #expect(InboundDecoder.decode(requestDB, role: .client) == .success(.client(.requestAccess(RequestAccess(resourceId: ResourceID("res_db"))))))
        #expect(InboundDecoder.decode(requestDB, role: .gateway) == .failure(ErrorMessage(code: "unknown_type", message: "gateways cannot send request_access")))
        #expect(InboundDecoder.decode(#"{"v":1,"type":"authorized","request_id":"req_1"}"#, role: .gateway) == .success(.gateway(.authorized(Authorized(requestId: RequestID("req_1"))))))
        #expect(InboundDecoder.decode(#"{"v":1,"type":"ice_candidates","client_id":"c","candidates":["a"]}"#, role: .gateway)
            == .success(.gateway(.iceCandidates(ClientCandidates(clientId: ClientID("c"), candidates: ["a"])))))
        let tooMany = "[" + Array(repeating: #""a""#, count: 65).joined(separator: ",") + "]"
        #expect(InboundDecoder.decode(#"{"v":1,"type":"ice_candidates","gateway_id":"g","candidates":\#(tooMany)}"#, role: .client).failureCode == "malformed")
        #expect(InboundDecoder.decode("[1]", role: .client).failureCode == "malformed")
        #expect(InboundDecoder.decode(#"{"type":"ping"}"#, role: .client).failureCode == "unsupported_version")
        #expect(InboundDecoder.decode(#"{"v":1}"#, role: .client).failureCode == "malformed")
        #expect(InboundDecoder.decode(#"{"v":1,"type":"request_access","resource_id":""}"#, role: .client).failureCode == "malformed")
        // A field the message does not have fails closed, naming it, also nested ones.
        #expect(InboundDecoder.decode(#"{"v":1,"type":"request_access","resource_id":"r","resource":"x"}"#, role: .client)
            == .failure(ErrorMessage(code: "malformed", message: "resource is not a known field")))
        #expect(InboundDecoder.decode(#"{"v":1,"type":"ping","extra":null}"#, role: .client) == .success(.client(.ping)))
        #expect(InboundDecoder.decode(#"{"v":1,"type":"ping","extra":0}"#, role: .client).failureCode == "malformed")
    }

    @Test("outbound messages carry the envelope beside the body's snake_case fields")
    func envelope() throws {
        let text = ControlCodec.encode(ToGateway.revoke(Revoke(clientId: ClientID("cli_1"), resourceId: ResourceID("res_1"))))
        #expect(text == #"{"client_id":"cli_1","resource_id":"res_1","type":"revoke","v":1}"#)
    }
}

extension Result where Failure == ErrorMessage {
    var failureCode: String? {
        if case .failure(let v) = self { return v.code }
        return nil
    }
}
