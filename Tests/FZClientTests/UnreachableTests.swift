import FZCore
import Testing

@testable import FZClient

private func be32(_ b: [UInt8], _ at: Int) -> UInt32 { b[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) } }

/// The Internet checksum over `bytes` folds to 0xFFFF when the stored checksum is right.
private func verifies(_ bytes: [UInt8], pseudo: UInt64 = 0) -> Bool {
    bytes.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum($0, initial: pseudo)) } == 0xFFFF
}

private func transportVerifies(_ packet: [UInt8], headerLength: Int, proto: UInt8) -> Bool {
    let pseudo = packet.withUnsafeBytes { InternetChecksum.pseudoHeaderSum(ipPacket: $0, protocol: proto, length: packet.count - headerLength) }
    return verifies(Array(packet[headerLength...]), pseudo: pseudo)
}

private let src4: [UInt8] = [100, 64, 0, 2], dst4: [UInt8] = [10, 92, 0, 2]

private func tcp4(flags: UInt8, seq: UInt32 = 0x0102_0304, ack: UInt32 = 0, payload: Int = 0) -> [UInt8] {
    var t = [UInt8](repeating: 0, count: 20 + payload)
    t[0] = 0xC3; t[1] = 0x50; t[2] = 0; t[3] = 80
    for i in 0..<4 {
        t[4 + i] = UInt8(truncatingIfNeeded: seq >> (24 - 8 * UInt32(i)))
        t[8 + i] = UInt8(truncatingIfNeeded: ack >> (24 - 8 * UInt32(i)))
    }
    t[12] = 5 << 4
    t[13] = flags
    let total = 20 + t.count
    return [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0x40, 0, 64, 6, 0, 0] + src4 + dst4 + t
}

private func udp4() -> [UInt8] {
    let udp: [UInt8] = [0xC3, 0x50, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]
    let total = 20 + udp.count
    return [0x45, 0, 0, UInt8(total), 0, 0, 0x40, 0, 64, 17, 0, 0] + src4 + dst4 + udp
}

private let src6 = IPv6Address("fd00:2021:1111::2")!.bytes, dst6 = IPv6Address("fd00:99::5")!.bytes

private func ip6(next: UInt8, _ payload: [UInt8]) -> [UInt8] {
    [0x60, 0, 0, 0, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF), next, 64] + src6 + dst6 + payload
}

@Suite("Unreachable: TCP RST and ICMP replies for denied resources")
struct UnreachableTests {
    @Test("a SYN gets RST+ACK from the destination, acking SEQ+1, with valid checksums")
    func synIPv4() throws {
        let reply = try #require(Unreachable.reply(to: tcp4(flags: 0x02)))
        #expect(reply.count == 40)
        #expect(Array(reply[12..<16]) == dst4 && Array(reply[16..<20]) == src4)
        #expect(reply[9] == 6)
        #expect(verifies(Array(reply[0..<20])))
        #expect(transportVerifies(reply, headerLength: 20, proto: 6))
        #expect(reply[20] == 0 && reply[21] == 80 && reply[22] == 0xC3 && reply[23] == 0x50)
        #expect(be32(reply, 24) == 0)
        #expect(be32(reply, 28) == 0x0102_0305)
        #expect(reply[33] == 0x14)  // RST|ACK
    }

    @Test("a segment with ACK gets a bare RST with SEQ = its ACK; data counts in the ACK of one without")
    func otherSegments() throws {
        let r1 = try #require(Unreachable.reply(to: tcp4(flags: 0x10, ack: 77)))
        #expect(be32(r1, 24) == 77 && r1[33] == 0x04)
        let r2 = try #require(Unreachable.reply(to: tcp4(flags: 0x01, seq: 10, payload: 5)))
        #expect(be32(r2, 28) == 16)  // 5 bytes + FIN
        #expect(transportVerifies(r2, headerLength: 20, proto: 6))
    }

    @Test("never a reply to a RST, to an ICMP error, to a later fragment or to garbage")
    func noReply() {
        #expect(Unreachable.reply(to: tcp4(flags: 0x04)) == nil)
        var icmpError = udp4()
        icmpError[9] = 1
        icmpError[20] = 3
        #expect(Unreachable.reply(to: icmpError) == nil)
        var fragment = udp4()
        fragment[7] = 8
        #expect(Unreachable.reply(to: fragment) == nil)
        #expect(Unreachable.reply(to: []) == nil)
        #expect(Unreachable.reply(to: [0x45, 0, 0, 99] + [UInt8](repeating: 0, count: 16)) == nil)
        #expect(Unreachable.reply(to: ip6(next: 58, [1, 0, 0, 0])) == nil)
    }

    @Test("UDP gets ICMP type 3 code 13 quoting the header and 8 bytes")
    func udpIPv4() throws {
        let original = udp4()
        let reply = try #require(Unreachable.reply(to: original))
        #expect(reply[9] == 1)
        #expect(Array(reply[12..<16]) == dst4 && Array(reply[16..<20]) == src4)
        #expect(reply[20] == 3 && reply[21] == 13)
        #expect(Array(reply[28...]) == Array(original[0..<28]))
        #expect(verifies(Array(reply[0..<20])))
        #expect(verifies(Array(reply[20...])))
    }

    @Test("IPv6: a SYN gets RST+ACK; UDP gets ICMPv6 type 1 code 1, checksummed over the pseudo-header")
    func ipv6() throws {
        let t = Array(tcp4(flags: 0x02)[20...])
        let rst = try #require(Unreachable.reply(to: ip6(next: 6, t)))
        #expect(Array(rst[8..<24]) == dst6 && Array(rst[24..<40]) == src6)
        #expect(transportVerifies(rst, headerLength: 40, proto: 6))
        #expect(rst[53] == 0x14)
        let u = ip6(next: 17, [0xC3, 0x50, 0, 53, 0, 8, 0, 0])
        let icmp = try #require(Unreachable.reply(to: u))
        #expect(icmp[6] == 58 && icmp[40] == 1 && icmp[41] == 1)
        #expect(Array(icmp[48...]) == u)
        #expect(transportVerifies(icmp, headerLength: 40, proto: 58))
    }

    @Test("destination(of:) reads both families")
    func destination() {
        #expect(udp4().withUnsafeBytes { Unreachable.destination(of: $0) } == .v4(IPv4Address(10, 92, 0, 2)))
        #expect(ip6(next: 17, []).withUnsafeBytes { Unreachable.destination(of: $0) } == .v6(IPv6Address("fd00:99::5")!))
        #expect([UInt8]([0x45]).withUnsafeBytes { Unreachable.destination(of: $0) } == nil)
    }
}
