import FZControl
import FZCore
import Testing
import Tunnel
import WireGuard

@testable import FZGateway

@Suite("Authorizations: the portal's authorize/revoke/expiry/init turned into tunnel changes")
struct AuthorizationsTests {
    static let now = UnixTime(seconds: 1_800_000_000)
    let alice = ClientID("cli_alice"), bob = ClientID("cli_bob")
    let web = ResourceID("res_web"), db = ResourceID("res_db")

    func key() -> WireGuardKey { try! WireGuardKey(base64: PrivateKey.generate().publicKey.base64) }
    func psk() -> FZControl.PresharedKey { try! FZControl.PresharedKey(base64: PrivateKey.generate().publicKey.base64) }

    func authorize(_ client: ClientID, _ resource: ResourceID, key: WireGuardKey, psk: FZControl.PresharedKey,
                   address: String = "10.0.1.0/24", filters: [String] = ["tcp/443"], expiresIn: Int64 = 3_600,
                   ips: [String] = ["100.64.0.2", "fd00:2021::2"]) -> Authorize {
        let credentials = IceCredentials(username: "abcd1234", password: String(repeating: "0", count: 32))
        return Authorize(
            requestId: RequestID("req_\(client.rawValue)_\(resource.rawValue)"), clientId: client, clientPublicKey: key,
            clientTunnelIps: ips.map { IPAddress($0)! },
            resource: ResourceView(id: resource, siteId: SiteID("site_1"), name: resource.rawValue,
                                   address: try! ResourceAddress(parsing: address), filters: []),
            filters: filters.map { try! TrafficFilter(parsing: $0) }, expiresAt: UnixTime(seconds: Self.now.seconds + expiresIn),
            iceCredentials: IcePair(client: credentials, gateway: credentials), presharedKey: psk)
    }

    func packet(to destination: String, port: UInt16, tcp: Bool = true) -> [UInt8] {
        let d = IPv4Address(destination)!.value
        var p: [UInt8] = [0x45, 0, 0, 40, 0, 0, 0, 0, 64, tcp ? 6 : 17, 0, 0, 100, 64, 0, 2]
        p += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: d >> $0) }
        return p + [0x30, 0x39, UInt8(port >> 8), UInt8(port & 0xFF)] + [UInt8](repeating: 0, count: 16)
    }

    @Test func a_first_authorization_adds_a_peer_with_the_clients_addresses_and_the_resources_filter() throws {
        var state = Authorizations()
        let k = key()
        let changes = try state.authorize(authorize(alice, web, key: k, psk: psk()), now: Self.now).get()
        guard case .add(let id, let client) = try #require(changes.first), changes.count == 1 else {
            Issue.record("expected one add, got \(changes)")
            return
        }
        #expect(id == alice)
        #expect(client.publicKey == k)
        #expect(client.tunnelAddresses == [CIDR("100.64.0.2/32")!, CIDR("fd00:2021::2/128")!])
        #expect(client.filter.evaluate(packet(to: "10.0.1.9", port: 443)) == .allow)
        #expect(client.filter.evaluate(packet(to: "10.0.1.9", port: 80)) == .deny)
        #expect(client.filter.evaluate(packet(to: "10.0.1.9", port: 443, tcp: false)) == .deny)
        #expect(client.filter.evaluate(packet(to: "10.0.2.9", port: 443)) == .deny, "outside the resource")
    }

    @Test func a_second_resource_widens_the_filter_without_touching_the_peer() throws {
        var state = Authorizations()
        let k = key(), p = psk()
        _ = state.authorize(authorize(alice, web, key: k, psk: p), now: Self.now)
        let changes = try state.authorize(authorize(alice, db, key: k, psk: p, address: "10.0.9.5", filters: []), now: Self.now).get()
        guard case .update(_, let client) = try #require(changes.first), changes.count == 1 else {
            Issue.record("expected one update, got \(changes)")
            return
        }
        #expect(client.filter.evaluate(packet(to: "10.0.9.5", port: 5432)) == .allow, "no filters: every port")
        #expect(client.filter.evaluate(packet(to: "10.0.1.9", port: 443)) == .allow)
        // The same authorization again changes nothing.
        #expect(try state.authorize(authorize(alice, db, key: k, psk: p, address: "10.0.9.5", filters: []), now: Self.now).get() == [])
    }

    @Test func revoke_removes_the_resource_and_the_last_one_removes_the_peer() {
        var state = Authorizations()
        let k = key(), p = psk()
        _ = state.authorize(authorize(alice, web, key: k, psk: p), now: Self.now)
        _ = state.authorize(authorize(alice, db, key: k, psk: p, address: "10.0.9.5"), now: Self.now)
        _ = state.authorize(authorize(bob, web, key: key(), psk: psk(), ips: ["100.64.0.3"]), now: Self.now)
        let first = state.revoke(client: alice, resource: web)
        guard case .update(_, let client) = first.first, first.count == 1 else {
            Issue.record("expected one update, got \(first)")
            return
        }
        #expect(client.filter.evaluate(packet(to: "10.0.1.9", port: 443)) == .deny)
        #expect(state.revoke(client: alice, resource: db) == [.remove(alice)])
        #expect(state.revoke(client: alice, resource: db) == [], "already gone")
        #expect(state.clients.keys.sorted() == [bob])
    }

    @Test func grants_expire_at_their_time() {
        var state = Authorizations()
        let k = key(), p = psk()
        _ = state.authorize(authorize(alice, web, key: k, psk: p, expiresIn: 60), now: Self.now)
        _ = state.authorize(authorize(alice, db, key: k, psk: p, address: "10.0.9.5", expiresIn: 120), now: Self.now)
        #expect(state.nextExpiry == UnixTime(seconds: Self.now.seconds + 60))
        #expect(state.expire(now: UnixTime(seconds: Self.now.seconds + 59)) == [])
        #expect(state.expire(now: UnixTime(seconds: Self.now.seconds + 60)).count == 1)
        #expect(state.expire(now: UnixTime(seconds: Self.now.seconds + 120)) == [.remove(alice)])
        #expect(state.nextExpiry == nil)
    }

    @Test func a_new_preshared_key_or_client_key_replaces_the_peer() throws {
        var state = Authorizations()
        let k = key()
        _ = state.authorize(authorize(alice, web, key: k, psk: psk()), now: Self.now)
        let changes = try state.authorize(authorize(alice, web, key: k, psk: psk()), now: Self.now).get()
        #expect(changes.count == 2)
        #expect(changes.first == .remove(alice))
        let newKey = key()
        let rekeyed = try state.authorize(authorize(alice, db, key: newKey, psk: psk(), address: "10.0.9.5"), now: Self.now).get()
        guard case .add(_, let client) = rekeyed.last else {
            Issue.record("expected a replacement, got \(rekeyed)")
            return
        }
        #expect(client.publicKey == newKey)
        #expect(client.grants.keys.sorted() == [db], "the old key's grants do not carry over")
    }

    @Test func refusals_change_nothing() {
        var state = Authorizations()
        _ = state.authorize(authorize(alice, web, key: key(), psk: psk()), now: Self.now)
        let before = state.clients
        #expect(state.authorize(authorize(bob, web, key: key(), psk: psk(), expiresIn: 0), now: Self.now) == .failure(.expired))
        #expect(state.authorize(authorize(bob, web, key: key(), psk: psk(), ips: []), now: Self.now) == .failure(.noTunnelAddress))
        #expect(state.authorize(authorize(bob, db, key: key(), psk: psk(), address: "*.corp.example"), now: Self.now)
                == .failure(.unsupportedResource("res_db")))
        #expect(state.clients == before)
    }

    @Test func init_after_a_reconnect_keeps_unchanged_peers_untouched_and_drops_what_the_portal_no_longer_holds() {
        var state = Authorizations()
        let ka = key(), pa = psk(), kb = key(), pb = psk()
        _ = state.authorize(authorize(alice, web, key: ka, psk: pa), now: Self.now)
        _ = state.authorize(authorize(bob, web, key: kb, psk: pb, ips: ["100.64.0.3"]), now: Self.now)
        let (changes, refused) = state.restore([authorize(alice, web, key: ka, psk: pa)], now: Self.now)
        #expect(changes == [.remove(bob)], "alice's tunnel is not touched")
        #expect(refused.isEmpty)
        let (again, _) = state.restore([authorize(alice, web, key: ka, psk: pa),
                                        authorize(bob, db, key: kb, psk: pb, address: "10.0.9.5", ips: ["100.64.0.3"])], now: Self.now)
        #expect(again.count == 1)
        if case .add(let id, _) = again.first { #expect(id == bob) } else { Issue.record("expected bob added, got \(again)") }
    }
}
