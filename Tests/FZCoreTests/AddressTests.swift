import FZCore
import Testing

@Suite("Addresses, prefixes and time")
struct AddressTests {
    @Test("IPv4 and IPv6 text round-trips")
    func roundTrip() {
        for t in ["0.0.0.0", "192.0.2.1", "255.255.255.255"] { #expect(IPv4Address(t)?.description == t) }
        for t in ["::", "::1", "2001:db8::1", "::ffff:127.0.0.1", "fe80::1:2:3:4"] {
            #expect(IPv6Address(t)?.description == t)
        }
        #expect(IPv4Address("256.0.0.1") == nil)
        #expect(IPv6Address("1::2::3") == nil)
        #expect(IPAddress("example.com") == nil)
    }

    @Test("socket addresses parse both families and reject junk")
    func socketAddresses() {
        #expect(SocketAddress("1.2.3.4:5")?.description == "1.2.3.4:5")
        #expect(SocketAddress("[::1]:3478")?.description == "[::1]:3478")
        #expect(SocketAddress("::1", defaultPort: 9)?.port == 9)
        #expect(SocketAddress("1.2.3.4") == nil)
        #expect(SocketAddress("1.2.3.4:70000") == nil)
        #expect(SocketAddress("[::1]") == nil)
    }

    @Test("embedded IPv4 addresses are unmasked in every well-known form")
    func embedded() {
        let loop = IPv4Address(127, 0, 0, 1)
        for t in ["::ffff:127.0.0.1", "::ffff:7f00:1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "2002:7f00:1:1::5"] {
            #expect(IPAddress(t)?.embeddedIPv4 == loop, "\(t)")
        }
        for t in ["::", "::1", "2001:db8::1", "127.0.0.1"] { #expect(IPAddress(t)?.embeddedIPv4 == nil, "\(t)") }
    }

    @Test("CIDR membership masks host bits and never matches across families")
    func cidr() {
        let net = CIDR("10.1.2.3/8")!
        #expect(net.description == "10.0.0.0/8")
        #expect(net.contains(IPAddress("10.255.0.1")!))
        #expect(!net.contains(IPAddress("11.0.0.1")!))
        #expect(!net.contains(IPAddress("::ffff:10.0.0.1")!))
        #expect(CIDR("fc00::/7")!.contains(IPAddress("fd00::1")!))
        #expect(CIDR("::/0")!.contains(IPAddress("2001:db8::1")!))
        #expect(CIDR("0.0.0.0/0")!.contains(IPAddress("8.8.8.8")!))
        #expect(CIDR("1.2.3.4/33") == nil)
        #expect(CIDR("::1/129") == nil)
        #expect(CIDR("2001:db8::/65")!.contains(IPAddress("2001:db8::7fff:ffff:ffff:ffff")!))
        #expect(!CIDR("2001:db8::/65")!.contains(IPAddress("2001:db8::8000:0:0:0")!))
    }

    @Test("timestamps add durations without overflow and subtract to signed durations")
    func timestamps() {
        let t = Timestamp.seconds(10)
        #expect((t + .seconds(5)).seconds == 15)
        #expect((t + .seconds(-20)) == .zero)
        #expect(Timestamp.distantFuture + .seconds(1) == .distantFuture)
        #expect(Timestamp.seconds(3) - Timestamp.seconds(5) == .seconds(-2))
    }
}
