import FZCore
import STUN
import Testing

@testable import TURN

@Suite("Peer deny-list")
struct PeerPolicyTests {
    static let deniedByDefault = [
        "127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "::ffff:7f00:1", "64:ff9b::7f00:1",
        "2002:7f00:1::", "169.254.169.254", "10.1.2.3", "100.64.0.1", "172.16.0.1", "172.31.255.255",
        "192.0.0.8", "192.168.1.1", "198.18.0.1", "198.19.255.255", "192.0.2.1", "198.51.100.7", "203.0.113.9",
        "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "fc00::1", "fd12:3456::1", "fe80::1",
        "ff02::1", "2001:db8::1", "::127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",
        "::ffff:169.254.169.254", "::0.0.0.2",
    ]
    static let allowedByDefault = [
        "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
        "2002:808:808::1", "198.20.0.1",
    ]

    @Test("the default list denies internal, special and disguised addresses", arguments: deniedByDefault)
    func denied(_ text: String) {
        #expect(!PeerPolicy().permits(IPAddress(text)!), "\(text) must be denied")
    }

    @Test("the default list allows public addresses, also in IPv6 disguises", arguments: allowedByDefault)
    func allowed(_ text: String) {
        #expect(PeerPolicy().permits(IPAddress(text)!), "\(text) must be allowed")
    }

    @Test("allowing loopback opens 127/8 and ::1, including their mapped forms, and nothing else")
    func loopback() {
        let p = PeerPolicy(allow: PeerPolicy.loopback)
        for t in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"] {
            #expect(p.permits(IPAddress(t)!), "\(t)")
        }
        for t in ["10.0.0.1", "169.254.169.254", "::ffff:10.0.0.1"] { #expect(!p.permits(IPAddress(t)!), "\(t)") }
    }

    @Test("an explicit deny wins over an explicit allow and over public addresses")
    func denyWins() {
        let p = PeerPolicy(allow: [CIDR("8.0.0.0/8")!], deny: [CIDR("8.8.8.0/24")!])
        #expect(!p.permits(IPAddress("8.8.8.8")!))
        #expect(!p.permits(IPAddress("::ffff:8.8.8.8")!))
        #expect(p.permits(IPAddress("8.8.4.4")!))
    }

    @Test("allowing an IPv6 mapping prefix does not open the IPv4 ranges behind it")
    func mappedAllowDoesNotOpenV4() {
        let p = PeerPolicy(allow: [CIDR("::ffff:0:0/96")!])
        #expect(!p.permits(IPAddress("::ffff:127.0.0.1")!))
    }

    @Test("the relay's own listening transport is never a peer")
    func ownTransport() {
        let p = PeerPolicy(allow: PeerPolicy.loopback, forbiddenTransports: [SocketAddress("127.0.0.1:3478")!])
        #expect(!p.permits(SocketAddress("127.0.0.1:3478")!))
        #expect(!p.permits(SocketAddress("[::ffff:127.0.0.1]:3478")!))
        #expect(p.permits(SocketAddress("127.0.0.1:3479")!))
    }

    @Test("a denied peer is refused with 403 on CreatePermission and ChannelBind and dropped on Send")
    func enforced() {
        var h = Harness()
        _ = h.allocate()
        let loop = SocketAddress("127.0.0.1:5000")!
        let mapped = SocketAddress("[::ffff:127.0.0.1]:5000")!
        #expect(h.authed(.createPermission, [.xorPeerAddress(loop)])?.code == 403)
        #expect(h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(loop)])?.code == 403)
        #expect(h.send(sendIndication(to: loop, [1])) == .none)
        #expect(h.server.stats.peerDenied == 3)
        _ = mapped
    }

    @Test("with loopback allowed relaying to loopback works")
    func loopbackAllowed() {
        var h = Harness(policy: PeerPolicy(allow: PeerPolicy.loopback))
        _ = h.allocate()
        #expect(h.authed(.createPermission, [.xorPeerAddress(SocketAddress("127.0.0.1:5000")!)])?.isSuccess == true)
    }

    @Test("a reload that denies a peer removes its permissions and channels at once")
    func reloadRevokes() {
        var h = Harness()
        let relayed = h.allocate()!.xorRelayedAddresses[0]
        _ = h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(publicPeer)])
        h.server.updatePeerPolicy(PeerPolicy(deny: [CIDR("8.8.8.8/32")!]))
        #expect(h.send(channelData(0x4001, [1])) == .none)
        #expect(h.fromPeer([1], peer: publicPeer, relayed: relayed) == .none)
        #expect(h.server.allocationCount == 1, "the allocation itself stays")
    }
}
