import FZCore
import Testing

@testable import Tunnel

@Suite("PacketFilter: the per-peer policy on decrypted packets")
struct PacketFilterTests {
    let filter = PacketFilter(rules: [
        .init(destination: CIDR("10.0.1.0/24")!, protocols: .tcp(443...443)),
        .init(destination: CIDR("10.0.1.0/24")!, protocols: .udp(5000...5999)),
        .init(destination: CIDR("10.0.2.7/32")!, protocols: .icmp),
        .init(destination: CIDR("10.0.3.0/24")!, protocols: .any),
        .init(destination: CIDR("fd00:1::/64")!, protocols: .tcp(22...22)),
    ])
    let client = "100.64.0.2"

    @Test func tcp_and_udp_by_destination_and_port() {
        #expect(filter.evaluate(Packets.v4(client, "10.0.1.5", protocol: Packets.tcp, port: 443)) == .allow)
        #expect(filter.evaluate(Packets.v4(client, "10.0.1.5", protocol: Packets.tcp, port: 444)) == .deny)
        #expect(filter.evaluate(Packets.v4(client, "10.0.1.5", protocol: Packets.udp, port: 443)) == .deny,
                "443 is allowed for TCP only")
        #expect(filter.evaluate(Packets.v4(client, "10.0.1.5", protocol: Packets.udp, port: 5999)) == .allow)
        #expect(filter.evaluate(Packets.v4(client, "10.0.1.5", protocol: Packets.udp, port: 6000)) == .deny)
        #expect(filter.evaluate(Packets.v4(client, "10.0.9.5", protocol: Packets.tcp, port: 443)) == .deny,
                "outside every rule's prefix")
    }

    @Test func icmp_rules_and_any_protocol_rules() {
        #expect(filter.evaluate(Packets.v4(client, "10.0.2.7", protocol: Packets.icmp)) == .allow)
        #expect(filter.evaluate(Packets.v4(client, "10.0.2.7", protocol: Packets.tcp, port: 80)) == .deny)
        #expect(filter.evaluate(Packets.v4(client, "10.0.2.8", protocol: Packets.icmp)) == .deny)
        #expect(filter.evaluate(Packets.v4(client, "10.0.3.200", protocol: 47)) == .allow, "GRE under an any rule")
        #expect(filter.evaluate(Packets.v4(client, "10.0.3.200", protocol: Packets.tcp, port: 1)) == .allow)
    }

    @Test func ipv6_after_extension_headers() {
        let ok = Packets.v6("fd00:64::2", "fd00:1::9", protocol: Packets.tcp, port: 22, extensions: [0, 60])
        #expect(filter.evaluate(ok) == .allow)
        #expect(filter.evaluate(Packets.v6("fd00:64::2", "fd00:1::9", protocol: Packets.tcp, port: 23)) == .deny)
        #expect(filter.evaluate(Packets.v6("fd00:64::2", "fd00:2::9", protocol: Packets.tcp, port: 22)) == .deny)
        #expect(filter.evaluate(Packets.v6("fd00:64::2", "fd00:1::9", protocol: Packets.icmpV6)) == .deny)
    }

    @Test func fragments_are_judged_by_their_first_fragment() {
        // A later fragment carries no ports: allowed when destination and protocol match a rule.
        #expect(filter.evaluate(Packets.v4(client, "10.0.1.5", protocol: Packets.udp, port: 1, fragmentOffset: 185)) == .allow)
        #expect(filter.evaluate(Packets.v4(client, "10.0.2.7", protocol: Packets.udp, port: 1, fragmentOffset: 185)) == .deny)
        // TCP at offset 1 could overwrite the checked header (RFC 1858).
        #expect(filter.evaluate(Packets.v4(client, "10.0.1.5", protocol: Packets.tcp, port: 443, fragmentOffset: 1)) == .malformed)
        // A first fragment too short to carry the ports ("tiny fragment").
        #expect(filter.evaluate(Packets.v4(client, "10.0.1.5", protocol: Packets.tcp, payload: 2)) == .malformed)
        let later = Packets.v6("fd00:64::2", "fd00:1::9", protocol: Packets.tcp, port: 9, extensions: [44], fragmentOffset: 100)
        #expect(filter.evaluate(later) == .allow)
        let first = Packets.v6("fd00:64::2", "fd00:1::9", protocol: Packets.tcp, port: 9, extensions: [44])
        #expect(filter.evaluate(first) == .deny, "a first fragment's ports are checked")
    }

    @Test func malformed_packets_are_never_allowed_and_never_crash() {
        #expect(filter.evaluate([]) == .malformed)
        #expect(filter.evaluate([0x45, 0, 0]) == .malformed)
        var badIHL = Packets.v4(client, "10.0.3.1")
        badIHL[0] = 0x4F  // 60-byte header in a 32-byte packet
        #expect(filter.evaluate(badIHL) == .malformed)
        #expect(filter.evaluate([UInt8](repeating: 0x70, count: 60)) == .malformed, "version 7")
        // An extension header chain that runs past the end.
        var chain = Packets.v6("fd00:64::2", "fd00:1::9", extensions: [0], payload: 0)
        chain[41] = 200
        #expect(filter.evaluate(chain) == .malformed)
        // Every truncation of valid packets: a verdict, no crash.
        for packet in [Packets.v4(client, "10.0.1.5", protocol: Packets.tcp, port: 443),
                       Packets.v6("fd00:64::2", "fd00:1::9", protocol: Packets.tcp, port: 22, extensions: [0, 44, 60])] {
            for n in 0..<packet.count { _ = filter.evaluate(Array(packet[0..<n])) }
        }
    }

    @Test func allow_all_and_deny_all() {
        #expect(PacketFilter.allowAll.evaluate([1, 2, 3]) == .allow, "static mode: AllowedIPs alone decides")
        #expect(PacketFilter.denyAll.evaluate(Packets.v4(client, "10.0.3.1")) == .deny)
    }
}
