import FZControl
import FZCore
import Testing

@testable import FZClient

private let t0 = Timestamp(nanoseconds: 1_000_000_000_000)
private let wall0 = UnixTime(seconds: 1_800_000_000)
private let site = SiteID("site_a")
private let web = ResourceView(id: ResourceID("res_web"), siteId: site, name: "web", address: .cidr(CIDR("10.20.0.0/24")!), filters: [])
private let host = ResourceView(id: ResourceID("res_host"), siteId: site, name: "host", address: .ip(IPAddress("10.20.0.100")!), filters: [])
private let named = ResourceView(id: ResourceID("res_dns"), siteId: site, name: "wiki", address: .dns(try! DNSPattern("wiki.corp")), filters: [])
private let gw1 = GatewayID("gw_1"), gw2 = GatewayID("gw_2")
private let key1 = WireGuardKey(bytes: Array(repeating: 1, count: 32))
private let key2 = WireGuardKey(bytes: Array(repeating: 2, count: 32))
private let tunnel = TunnelAddresses(ipv4: IPv4Address(100, 64, 0, 2), ipv6: IPv6Address("fd00:2021:1111::2")!)
private let relay = RelayView(id: RelayID("relay_1"), name: "relay-1", region: "eu", addresses: ["198.18.0.2:3478"], username: "u",
                              password: "p", expiresAt: UnixTime(seconds: 1_800_086_400))

private func initMessage(_ resources: [ResourceView] = [web, host, named]) -> ToClient {
    .initialize(ClientInit(clientId: ClientID("cli_1"), actorId: ActorID("act_1"), tunnel: tunnel, resources: resources, relays: [relay]))
}

private func granted(_ r: ResourceView, _ gateway: GatewayID = gw1, key: WireGuardKey = key1, ice: IcePair, psk: PresharedKey,
                     lifetime: Int64 = 3600) -> ToClient {
    .accessGranted(AccessGranted(resourceId: r.id, gatewayId: gateway, gatewayPublicKey: key, siteId: site,
                                 expiresAt: UnixTime(seconds: wall0.seconds + lifetime), iceCredentials: ice, presharedKey: psk, relays: []))
}

/// An IPv4 TCP SYN from the tunnel address to `destination`:80.
private func syn(to destination: IPv4Address, seq: UInt32 = 1000) -> [UInt8] {
    var tcp = [UInt8](repeating: 0, count: 20)
    tcp[0] = 0xC3; tcp[1] = 0x50  // 50000
    tcp[2] = 0; tcp[3] = 80
    for i in 0..<4 { tcp[4 + i] = UInt8(truncatingIfNeeded: seq >> (24 - 8 * UInt32(i))) }
    tcp[12] = 5 << 4
    tcp[13] = 0x02
    tcp[14] = 0xFF; tcp[15] = 0xFF
    let (a, b, c, d) = destination.octets
    let (s0, s1, s2, s3) = tunnel.ipv4.octets
    var ip: [UInt8] = [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, s0, s1, s2, s3, a, b, c, d]
    ip += tcp
    return ip
}

private func started() -> (ClientController, [ClientController.Action]) {
    var c = ClientController()
    let actions = c.handle(initMessage(), now: t0, wall: wall0)
    return (c, actions)
}

@Suite("ClientController: routes, holding, access, connections, failover")
struct ClientControllerTests {
    @Test("init sets the tunnel addresses, a route per CIDR and IP resource (none for DNS) and the relays")
    func initialize() {
        let (c, actions) = started()
        #expect(actions.contains(.setAddresses(tunnel)))
        #expect(actions.contains(.addRoute(CIDR("10.20.0.0/24")!)))
        #expect(actions.contains(.addRoute(CIDR("10.20.0.100/32")!)))
        #expect(actions.filter { if case .addRoute = $0 { true } else { false } }.count == 2)
        #expect(actions.contains(.setRelays([relay])))
        #expect(c.resources.count == 3)
    }

    @Test("the first packet is held and asks once; access_granted connects without AllowedIPs; the path releases the packets")
    func firstPacket() {
        var (c, _) = started()
        let ice = IcePair(client: .random(), gateway: .random()), psk = PresharedKey.random()
        let p1 = syn(to: IPv4Address(10, 20, 0, 100)), p2 = syn(to: IPv4Address(10, 20, 0, 100), seq: 2000)
        // The most specific resource: the /32 host, not the /24.
        #expect(c.unrouted(p1, now: t0) == [.send(.requestAccess(RequestAccess(resourceId: host.id)))])
        #expect(c.unrouted(p2, now: t0 + .milliseconds(10)) == [])
        let a = c.handle(granted(host, ice: ice, psk: psk), now: t0 + .milliseconds(50), wall: wall0)
        #expect(a == [.connect(gateway: gw1, publicKey: key1, presharedKey: psk, ice: ice, allowedIPs: [])])
        // Still no path: packets keep waiting rather than entering a handshake with nowhere to go.
        #expect(c.unrouted(p1, now: t0 + .milliseconds(60)) == [])
        let up = c.link(gw1, .connected, now: t0 + .milliseconds(80))
        #expect(up == [.setAllowedIPs(gw1, [CIDR("10.20.0.100/32")!]), .release([p1, p2, p1])])
        #expect(c.status.first { $0.resource.id == host.id }?.connected == true)
        // Repeated path events (upgrades, failovers) change nothing here.
        #expect(c.link(gw1, .connected, now: t0 + .milliseconds(90)) == [])
    }

    @Test("a second resource through the same connection widens its AllowedIPs and is released at once")
    func secondResource() {
        var (c, _) = started()
        let ice = IcePair(client: .random(), gateway: .random()), psk = PresharedKey.random()
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0)
        _ = c.handle(granted(host, ice: ice, psk: psk), now: t0, wall: wall0)
        _ = c.link(gw1, .connected, now: t0)
        let p = syn(to: IPv4Address(10, 20, 0, 7))
        #expect(c.unrouted(p, now: t0 + .seconds(1)) == [.send(.requestAccess(RequestAccess(resourceId: web.id)))])
        let a = c.handle(granted(web, ice: ice, psk: psk), now: t0 + .seconds(1), wall: wall0)
        // AllowedIPs in resource-id order: res_host, res_web.
        #expect(a == [.setAllowedIPs(gw1, [CIDR("10.20.0.100/32")!, CIDR("10.20.0.0/24")!]), .release([p])])
    }

    @Test("access_denied refuses the held packets and, for a while, new ones without asking again")
    func denied() {
        var (c, _) = started()
        let p = syn(to: IPv4Address(10, 20, 0, 100))
        _ = c.unrouted(p, now: t0)
        let a = c.handle(.accessDenied(AccessDenied(resourceId: host.id, reason: .offline)), now: t0, wall: wall0)
        #expect(a == [.refuse([p])])
        #expect(c.unrouted(p, now: t0 + .seconds(1)) == [.refuse([p])])
        #expect(c.handleTimeout(now: t0 + .seconds(5)) == [])
        #expect(c.unrouted(p, now: t0 + .seconds(5)) == [.send(.requestAccess(RequestAccess(resourceId: host.id)))])
    }

    @Test("packets to no resource are dropped and counted; held packets are bounded and age out")
    func bounds() {
        var (c, _) = started()
        #expect(c.unrouted(syn(to: IPv4Address(10, 99, 0, 1)), now: t0) == [])
        #expect(c.dropped.noResource == 1)
        #expect(c.unrouted([0x45, 0, 0], now: t0) == [])
        for i in 0..<70 { _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100), seq: UInt32(i)), now: t0) }
        #expect(c.dropped.overflow == 70 - 64)
        _ = c.handleTimeout(now: t0 + .seconds(1))
        #expect(c.dropped.stale == 64)
        // Unanswered and nobody waiting: forgotten at the retry time; the next packet asks again.
        #expect(c.handleTimeout(now: t0 + .seconds(5)) == [])
        #expect(c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0 + .seconds(6)).count == 1)
    }

    @Test("an unanswered request is sent again while packets keep waiting")
    func retry() {
        var (c, _) = started()
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0)
        #expect(c.nextDeadline == t0 + .seconds(1))
        _ = c.handleTimeout(now: t0 + .seconds(1))
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0 + .milliseconds(4500))
        #expect(c.handleTimeout(now: t0 + .seconds(5)) == [.send(.requestAccess(RequestAccess(resourceId: host.id)))])
    }

    @Test("a failed connection or an offline gateway asks again for what it carried; a new gateway replaces it")
    func failover() {
        var (c, _) = started()
        let ice = IcePair(client: .random(), gateway: .random()), psk = PresharedKey.random()
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0)
        _ = c.handle(granted(host, ice: ice, psk: psk), now: t0, wall: wall0)
        _ = c.link(gw1, .connected, now: t0)
        let lost = c.handle(.presence(Presence(gatewayId: gw1, online: false)), now: t0 + .seconds(2), wall: wall0)
        #expect(lost == [.disconnect(gw1), .send(.requestAccess(RequestAccess(resourceId: host.id)))])
        let p = syn(to: IPv4Address(10, 20, 0, 100))
        #expect(c.unrouted(p, now: t0 + .seconds(2)) == [])  // held: a request is out
        let ice2 = IcePair(client: .random(), gateway: .random())
        let a = c.handle(granted(host, gw2, key: key2, ice: ice2, psk: psk), now: t0 + .seconds(2), wall: wall0)
        #expect(a == [.connect(gateway: gw2, publicKey: key2, presharedKey: psk, ice: ice2, allowedIPs: [])])
        #expect(c.link(gw2, .connected, now: t0 + .seconds(2)) == [.setAllowedIPs(gw2, [CIDR("10.20.0.100/32")!]), .release([p])])
        // Every path to gw2 fails: the same.
        #expect(c.link(gw2, .failed, now: t0 + .seconds(3)) == [.disconnect(gw2), .send(.requestAccess(RequestAccess(resourceId: host.id)))])
        // Events of a connection that is gone are ignored.
        #expect(c.link(gw1, .connected, now: t0 + .seconds(3)) == [])
    }

    @Test("a grant ends at expires_at: the prefixes leave AllowedIPs and the last one ends the connection")
    func expiry() {
        var (c, _) = started()
        let ice = IcePair(client: .random(), gateway: .random()), psk = PresharedKey.random()
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0)
        _ = c.handle(granted(host, ice: ice, psk: psk, lifetime: 60), now: t0, wall: wall0)
        _ = c.link(gw1, .connected, now: t0)
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 5)), now: t0)
        _ = c.handle(granted(web, ice: ice, psk: psk, lifetime: 120), now: t0, wall: wall0)
        #expect(c.nextDeadline == t0 + .seconds(60))
        #expect(c.handleTimeout(now: t0 + .seconds(60)) == [.setAllowedIPs(gw1, [CIDR("10.20.0.0/24")!])])
        #expect(c.handleTimeout(now: t0 + .seconds(120)) == [.disconnect(gw1)])
    }

    @Test("resource_removed drops its route and grant; resource_updated moves its route and AllowedIPs")
    func resourceChanges() {
        var (c, _) = started()
        let ice = IcePair(client: .random(), gateway: .random()), psk = PresharedKey.random()
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0)
        _ = c.handle(granted(host, ice: ice, psk: psk), now: t0, wall: wall0)
        _ = c.link(gw1, .connected, now: t0)
        var moved = host
        moved.address = .ip(IPAddress("10.20.0.101")!)
        let u = c.handle(.resourceUpdated(ResourceUpdated(resource: moved)), now: t0, wall: wall0)
        #expect(u == [.setAllowedIPs(gw1, [CIDR("10.20.0.101/32")!]), .removeRoute(CIDR("10.20.0.100/32")!), .addRoute(CIDR("10.20.0.101/32")!)])
        let r = c.handle(.resourceRemoved(ResourceRemoved(resourceId: host.id)), now: t0, wall: wall0)
        #expect(r == [.disconnect(gw1), .removeRoute(CIDR("10.20.0.101/32")!)])
        // The address now falls to the /24 that covers it.
        #expect(c.unrouted(syn(to: IPv4Address(10, 20, 0, 101)), now: t0) == [.send(.requestAccess(RequestAccess(resourceId: web.id)))])
    }

    @Test("after a reconnect, init asks again for what was pending and keeps the grants")
    func reconnect() {
        var (c, _) = started()
        let ice = IcePair(client: .random(), gateway: .random()), psk = PresharedKey.random()
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0)
        _ = c.handle(granted(host, ice: ice, psk: psk), now: t0, wall: wall0)
        _ = c.link(gw1, .connected, now: t0)
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 5)), now: t0)
        let again = c.handle(initMessage(), now: t0 + .seconds(1), wall: wall0)
        #expect(again == [.setRelays([relay]), .send(.requestAccess(RequestAccess(resourceId: web.id)))])
        #expect(c.gateway(of: host.id) == gw1)
        // A resource the new init no longer lists is dropped with its grant.
        let fewer = c.handle(initMessage([web]), now: t0 + .seconds(2), wall: wall0)
        #expect(fewer.contains(.disconnect(gw1)))
        #expect(fewer.contains(.removeRoute(CIDR("10.20.0.100/32")!)))
    }

    @Test("with the portal away, granted resources keep working and new ones are refused at once")
    func portalAway() {
        var (c, _) = started()
        let ice = IcePair(client: .random(), gateway: .random()), psk = PresharedKey.random()
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0)
        _ = c.handle(granted(host, ice: ice, psk: psk), now: t0, wall: wall0)
        _ = c.link(gw1, .connected, now: t0)
        let pending = syn(to: IPv4Address(10, 20, 0, 5))
        _ = c.unrouted(pending, now: t0)
        #expect(c.portalLost(now: t0 + .seconds(1)) == [.refuse([pending])])
        let p = syn(to: IPv4Address(10, 20, 0, 7))
        #expect(c.unrouted(p, now: t0 + .seconds(2)) == [.refuse([p])])
        #expect(c.gateway(of: host.id) == gw1)
        // Back: the next packet asks again.
        _ = c.handle(initMessage(), now: t0 + .seconds(3), wall: wall0)
        #expect(c.unrouted(p, now: t0 + .seconds(3)) == [.send(.requestAccess(RequestAccess(resourceId: web.id)))])
    }

    @Test("candidates pass through both ways; local ones only for a connection that exists")
    func candidates() {
        var (c, _) = started()
        let line = "candidate:1 1 udp 2130706431 198.18.0.3 51820 typ host"
        #expect(c.handle(.iceCandidates(GatewayCandidates(gatewayId: gw1, candidates: [line])), now: t0, wall: wall0)
            == [.addCandidates(gw1, [line])])
        #expect(c.link(gw1, .localCandidates([line]), now: t0) == [])
        let ice = IcePair(client: .random(), gateway: .random())
        _ = c.unrouted(syn(to: IPv4Address(10, 20, 0, 100)), now: t0)
        _ = c.handle(granted(host, ice: ice, psk: .random()), now: t0, wall: wall0)
        #expect(c.link(gw1, .localCandidates([line]), now: t0)
            == [.send(.iceCandidates(GatewayCandidates(gatewayId: gw1, candidates: [line])))])
    }
}
