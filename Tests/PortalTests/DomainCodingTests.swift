import FZControl
import FZCore
import Foundation
import Testing
import FZCrypto
@testable import Portal

@Suite("Domain values as JSON")
struct DomainCodingTests {
    func roundTrip<T: Codable & Equatable>(_ value: T) throws -> String {
        let data = try JSONEncoder().encode(value)
        #expect(try JSONDecoder().decode(T.self, from: data) == value)
        return String(decoding: data, as: UTF8.self)
    }

    @Test("resource addresses keep their kind: CIDR, single IP or DNS pattern")
    func addresses() throws {
        #expect(try ResourceAddress(parsing: "10.0.0.0/8").kind == "cidr")
        #expect(try ResourceAddress(parsing: "10.1.2.3").kind == "ip")
        #expect(try ResourceAddress(parsing: "2001:db8::1").kind == "ip")
        #expect(try ResourceAddress(parsing: "*.corp.example").kind == "dns")
        #expect(throws: ValidationError.self) { try ResourceAddress(parsing: "10.0.0.0/33") }
        #expect(try ResourceAddress(parsing: "10.0.0.0/8").contains(IPAddress("10.9.9.9")!))
    }

    @Test("traffic filters parse tcp and udp port ranges and icmp")
    func filters() throws {
        #expect(try TrafficFilter(parsing: "tcp/443") == .tcp(443...443))
        #expect(try TrafficFilter(parsing: "UDP/5000-5100") == .udp(5000...5100))
        #expect(try TrafficFilter(parsing: "icmp") == .icmp)
        for bad in ["tcp", "tcp/0", "tcp/10-5", "sctp/5", "udp/70000"] {
            #expect(throws: ValidationError.self) { try TrafficFilter(parsing: bad) }
        }
    }

    @Test("a resource, a policy with conditions and a client survive a JSON round trip")
    func entities() throws {
        let r = Resource(
            id: ResourceID("res_1"), siteId: SiteID("site_1"), name: "db", address: try ResourceAddress(parsing: "10.0.0.0/24"),
            filters: [.tcp(5432...5432), .icmp])
        let json = try roundTrip(r)
        #expect(json.contains("\"10.0.0.0\\/24\"") || json.contains("\"10.0.0.0/24\""))
        let p = Policy(
            id: PolicyID("pol_1"), groupId: GroupID("g"), resourceId: ResourceID("res_1"),
            conditions: PolicyConditions(sourceCidrs: [CIDR("192.0.2.0/24")!], timeWindow: try TimeWindow(days: [.friday], startMinute: 0, endMinute: 1440)))
        let pj = try roundTrip(p)
        #expect(pj.contains("24:00") && pj.contains("fri"))
        let c = Client(
            id: ClientID("cli_1"), actorId: ActorID("act_1"), name: "laptop", publicKey: WireGuardKey(bytes: Array(repeating: 7, count: 32)),
            ipv4: IPv4Address("100.64.0.1")!, ipv6: IPv6Address("fd00:2021:1111::1")!)
        _ = try roundTrip(c)
    }

    @Test("a WireGuard key must be 32 bytes of base64")
    func keys() {
        #expect(throws: ValidationError.self) { try WireGuardKey(base64: "abc") }
        #expect(throws: ValidationError.self) { try WireGuardKey(base64: Base64.encode(Array(repeating: 1, count: 31))) }
    }
}
