import FZCore
import Testing

@testable import Tunnel

@Suite struct AllowedIPsTests {
    func ip(_ s: String) -> IPAddress { IPAddress(s)! }
    func cidr(_ s: String) -> CIDR { CIDR(s)! }

    @Test func the_longest_matching_prefix_wins() {
        var table = AllowedIPs<Int>()
        table.insert(cidr("10.0.0.0/8"), 1)
        table.insert(cidr("10.1.0.0/16"), 2)
        table.insert(cidr("10.1.2.3/32"), 3)
        table.insert(cidr("0.0.0.0/0"), 0)
        #expect(table.lookup(ip("10.1.2.3")) == 3)
        #expect(table.lookup(ip("10.1.2.4")) == 2)
        #expect(table.lookup(ip("10.200.0.1")) == 1)
        #expect(table.lookup(ip("192.0.2.1")) == 0)
    }

    @Test func insertion_order_does_not_matter() {
        var table = AllowedIPs<Int>()
        table.insert(cidr("10.1.2.3/32"), 3)
        table.insert(cidr("0.0.0.0/0"), 0)
        table.insert(cidr("10.1.0.0/16"), 2)
        #expect(table.lookup(ip("10.1.2.3")) == 3)
        #expect(table.lookup(ip("10.1.9.9")) == 2)
        #expect(table.lookup(ip("11.0.0.0")) == 0)
    }

    @Test func no_match_is_nil_and_families_are_separate() {
        var table = AllowedIPs<Int>()
        table.insert(cidr("10.0.0.0/8"), 1)
        #expect(table.lookup(ip("11.0.0.1")) == nil)
        #expect(table.lookup(ip("::a00:1")) == nil)
        table.insert(cidr("::/0"), 6)
        #expect(table.lookup(ip("::a00:1")) == 6)
        #expect(table.lookup(ip("11.0.0.1")) == nil)
    }

    @Test func ipv6_prefixes_on_both_halves_of_the_address() {
        var table = AllowedIPs<Int>()
        table.insert(cidr("fd00::/8"), 8)
        table.insert(cidr("fd00:1::/32"), 32)
        table.insert(cidr("fd00:1::/96"), 96)
        table.insert(cidr("fd00:1::42/128"), 128)
        #expect(table.lookup(ip("fd00:1::42")) == 128)
        #expect(table.lookup(ip("fd00:1::43")) == 96)
        #expect(table.lookup(ip("fd00:1::1:0:43")) == 32)
        #expect(table.lookup(ip("fd00:2::1")) == 8)
        #expect(table.lookup(ip("fe80::1")) == nil)
    }

    @Test func host_bits_of_an_inserted_prefix_are_ignored() {
        var table = AllowedIPs<Int>()
        table.insert(cidr("10.1.2.3/16"), 1)
        #expect(table.lookup(ip("10.1.200.200")) == 1)
    }

    @Test func inserting_a_prefix_again_moves_it_to_the_new_value() {
        var table = AllowedIPs<Int>()
        table.insert(cidr("10.0.0.0/24"), 1)
        table.insert(cidr("10.0.0.0/24"), 2)
        #expect(table.lookup(ip("10.0.0.9")) == 2)
        #expect(table.entries.count == 1)
    }

    @Test func removing_a_peer_removes_only_its_prefixes() {
        var table = AllowedIPs<Int>()
        table.insert(cidr("10.0.0.0/24"), 1)
        table.insert(cidr("10.0.1.0/24"), 2)
        table.insert(cidr("fd00::/64"), 1)
        table.removeAll { $0 == 1 }
        #expect(table.lookup(ip("10.0.0.1")) == nil)
        #expect(table.lookup(ip("fd00::1")) == nil)
        #expect(table.lookup(ip("10.0.1.1")) == 2)
        #expect(table.entries.map(\.0.description) == ["10.0.1.0/24"])
    }

    @Test func agrees_with_a_linear_scan_on_random_tables() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            var table = AllowedIPs<Int>()
            var reference: [(CIDR, Int)] = []
            for value in 0..<30 {
                let prefix = CIDR(address: .v4(IPv4Address(UInt32.random(in: 0...UInt32.max, using: &rng) & 0xFF0F_0000 | 0x0A00_0000)),
                                  prefixLength: Int.random(in: 4...32, using: &rng))!
                table.insert(prefix, value)
                reference.removeAll { $0.0 == prefix }
                reference.append((prefix, value))
            }
            for _ in 0..<200 {
                let address = IPAddress.v4(IPv4Address(UInt32.random(in: 0...UInt32.max, using: &rng) & 0xFF0F_00FF | 0x0A00_0000))
                let expected = reference.filter { $0.0.contains(address) }.max { $0.0.prefixLength < $1.0.prefixLength }?.1
                #expect(table.lookup(address) == expected)
            }
        }
    }
}
