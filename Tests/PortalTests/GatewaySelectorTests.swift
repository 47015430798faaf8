import FZControl
import Testing
@testable import Portal

@Suite("Gateway selection")
struct GatewaySelectorTests {
    let north = SiteID("site_north")
    let south = SiteID("site_south")
    let a = GatewayID("gw_a"), b = GatewayID("gw_b"), c = GatewayID("gw_c")

    @Test("requests alternate between the online gateways of a site")
    func roundRobin() {
        var s = GatewaySelector()
        let picks = (0..<6).map { _ in s.select(site: north, online: [b, a]) }
        #expect(picks == [a, b, a, b, a, b])
    }

    @Test("no online gateway means no choice")
    func none() {
        var s = GatewaySelector()
        #expect(s.select(site: north, online: []) == nil)
    }

    @Test("an offline gateway is never chosen and the rotation continues over the rest")
    func offlineSkipped() {
        var s = GatewaySelector()
        #expect(s.select(site: north, online: [a, b, c]) == a)
        #expect(s.select(site: north, online: [a, c]) == c)  // b went offline
        #expect(s.select(site: north, online: [a, c]) == a)
        #expect(s.select(site: north, online: [a, c]) == c)
    }

    @Test("a gateway that comes online gets its turn without resetting the rotation")
    func joins() {
        var s = GatewaySelector()
        #expect(s.select(site: north, online: [a]) == a)
        #expect(s.select(site: north, online: [a, b]) == b)
        #expect(s.select(site: north, online: [a, b]) == a)
    }

    @Test("each site rotates independently")
    func perSite() {
        var s = GatewaySelector()
        #expect(s.select(site: north, online: [a, b]) == a)
        #expect(s.select(site: south, online: [c]) == c)
        #expect(s.select(site: north, online: [a, b]) == b)
    }

    @Test("many requests spread evenly")
    func fairness() {
        var s = GatewaySelector()
        var counts: [GatewayID: Int] = [:]
        for _ in 0..<300 { counts[s.select(site: north, online: [a, b, c])!, default: 0] += 1 }
        #expect(counts == [a: 100, b: 100, c: 100])
    }
}
