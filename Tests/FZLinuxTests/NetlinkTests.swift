import FZCore
import FZLinux
import Testing

/// The byte layouts of rtnetlink requests (rtnetlink(7)), checked against what `ip` sends
/// (captured with `strace -e sendmsg ip ...`, headers in host byte order on x86_64).
@Suite struct NetlinkTests {
    func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }
    func u16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }

    @Test func a_new_ipv4_address_is_an_ifaddrmsg_with_local_and_address_attributes() {
        let m = RouteNetlink.addAddress(InterfaceAddress("10.232.0.1/24")!, index: 7, sequence: 42)
        var expected: [UInt8] = []
        expected += u32(40) + u16(20) + u16(0x1 | 0x4 | 0x400 | 0x200) + u32(42) + u32(0)  // nlmsghdr
        expected += [2, 24, 0, 0] + u32(7)  // ifaddrmsg: AF_INET, /24, no flags, universe, index
        expected += u16(8) + u16(2) + [10, 232, 0, 1]  // IFA_LOCAL
        expected += u16(8) + u16(1) + [10, 232, 0, 1]  // IFA_ADDRESS
        #expect(m.bytes == expected)
    }

    @Test func a_new_ipv6_address_skips_duplicate_address_detection() {
        let m = RouteNetlink.addAddress(InterfaceAddress("fd00::1/64")!, index: 3, sequence: 1)
        #expect(m.bytes.count == 16 + 8 + 20 + 20)
        #expect(Array(m.bytes[16..<20]) == [10, 64, 0x02, 0])  // AF_INET6, /64, IFA_F_NODAD
        #expect(Array(m.bytes[28..<44]) == [0xfd] + [UInt8](repeating: 0, count: 14) + [1])
    }

    @Test func a_route_is_a_link_scope_unicast_rtmsg_in_the_main_table() {
        let m = RouteNetlink.addRoute(CIDR("10.232.0.0/16")!, index: 9, sequence: 5)
        var expected: [UInt8] = []
        expected += u32(44) + u16(24) + u16(0x1 | 0x4 | 0x400 | 0x200) + u32(5) + u32(0)
        expected += [2, 16, 0, 0, 254, 4, 253, 1] + u32(0)  // rtmsg
        expected += u16(8) + u16(1) + [10, 232, 0, 0]  // RTA_DST
        expected += u16(8) + u16(4) + u32(9)  // RTA_OIF
        #expect(m.bytes == expected)
    }

    @Test func setting_a_link_up_touches_only_the_up_flag_and_sets_the_mtu() {
        let m = RouteNetlink.setLink(index: 4, up: true, mtu: 1420, sequence: 2)
        var expected: [UInt8] = []
        expected += u32(40) + u16(16) + u16(0x1 | 0x4) + u32(2) + u32(0)
        expected += [0, 0] + u16(0) + u32(4) + u32(1) + u32(1)  // ifinfomsg: flags UP, change UP
        expected += u16(8) + u16(4) + u32(1420)  // IFLA_MTU
        #expect(m.bytes == expected)
        let down = RouteNetlink.setLink(index: 4, up: false, mtu: nil, sequence: 3)
        #expect(down.bytes.count == 32)
        #expect(Array(down.bytes[24..<32]) == u32(0) + u32(1))
    }

    @Test func attributes_are_padded_to_four_bytes() {
        var m = RouteNetlink.Message(type: 1, flags: 0, sequence: 0)
        m.appendAttribute(7, [1, 2, 3, 4, 5])
        #expect(m.bytes.count == 16 + 12)
        #expect(Array(m.bytes[16..<18]) == u16(9))  // rta_len excludes the padding
        #expect(Array(m.bytes[0..<4]) == u32(28))
    }

    func errorMessage(sequence: UInt32, error: Int32) -> [UInt8] {
        u32(36) + u16(2) + u16(0) + u32(sequence) + u32(0) + withUnsafeBytes(of: error) { Array($0) } + [UInt8](repeating: 0, count: 16)
    }

    @Test func an_ack_is_zero_and_a_nack_is_its_errno() {
        let ack = errorMessage(sequence: 7, error: 0)
        let nack = errorMessage(sequence: 8, error: -17)  // EEXIST
        let both = ack + nack
        both.withUnsafeBytes { b in
            #expect(RouteNetlink.acknowledgement(in: b, sequence: 7) == 0)
            #expect(RouteNetlink.acknowledgement(in: b, sequence: 8) == 17)
            #expect(RouteNetlink.acknowledgement(in: b, sequence: 9) == nil)
        }
    }

    @Test func a_truncated_reply_is_not_an_answer() {
        let cut = Array(errorMessage(sequence: 7, error: 0).prefix(20))
        cut.withUnsafeBytes { #expect(RouteNetlink.acknowledgement(in: $0, sequence: 7) == nil) }
    }

    @Test func interface_addresses_keep_their_host_bits() {
        let a = InterfaceAddress("10.0.0.1/24")!
        #expect(a.description == "10.0.0.1/24")
        #expect(a.network.description == "10.0.0.0/24")
        #expect(InterfaceAddress("10.0.0.1")?.prefixLength == 32)
        #expect(InterfaceAddress("fd00::1/129") == nil)
        #expect(InterfaceAddress("10.0.0.1/x") == nil)
    }
}
