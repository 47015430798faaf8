import FZCore
import STUN
import Testing

@testable import TURN

@Suite("Permissions, channels and data (RFC 8656 §9-§12)")
struct RelayingTests {
    /// A harness with one allocation for alice; returns its relayed IPv4 address.
    static func allocated(_ h: inout Harness, _ attrs: [Attribute] = [.requestedTransport(17)]) -> SocketAddress {
        h.allocate(attrs)!.xorRelayedAddresses.first!
    }

    @Test("without a permission nothing passes either way")
    func noPermission() {
        var h = Harness()
        let relayed = Self.allocated(&h)
        #expect(h.send(sendIndication(to: publicPeer, [1, 2, 3])) == .none)
        #expect(h.fromPeer([9], peer: publicPeer, relayed: relayed) == .none)
        #expect(h.server.stats.noPermissionDropped == 2)
    }

    @Test("with a permission Send indications reach the peer and peer data comes back as Data indications")
    func sendAndData() {
        var h = Harness()
        let relayed = Self.allocated(&h)
        #expect(h.authed(.createPermission, [.xorPeerAddress(publicPeer)])?.isSuccess == true)
        // The DATA value follows the header, XOR-PEER-ADDRESS (12 bytes) and DATA's own header.
        #expect(h.send(sendIndication(to: publicPeer, [1, 2, 3]))
                == .forward(from: relayed, to: publicPeer, payloadOffset: 36, payloadLength: 3, dontFragment: false))
        #expect(h.fromPeer([7, 8], peer: publicPeer, relayed: relayed)
                == .dataIndication(client: alice, listener: listener, peer: publicPeer))
    }

    @Test("a permission covers every port of the peer's IP")
    func permissionIsPerIP() {
        var h = Harness()
        let relayed = Self.allocated(&h)
        _ = h.authed(.createPermission, [.xorPeerAddress(publicPeer)])
        let otherPort = SocketAddress(ip: publicPeer.ip, port: 9999)
        #expect(h.fromPeer([1], peer: otherPort, relayed: relayed) != .none)
    }

    @Test("permissions expire after 300 seconds unless refreshed")
    func permissionExpiry() {
        var h = Harness()
        let relayed = Self.allocated(&h, [.requestedTransport(17), .lifetime(3600)])
        _ = h.authed(.createPermission, [.xorPeerAddress(publicPeer)])
        h.advance(seconds: 299)
        #expect(h.fromPeer([1], peer: publicPeer, relayed: relayed) != .none)
        _ = h.authed(.createPermission, [.xorPeerAddress(publicPeer)])
        h.advance(seconds: 299)
        #expect(h.fromPeer([1], peer: publicPeer, relayed: relayed) != .none)
        h.advance(seconds: 2)
        #expect(h.fromPeer([1], peer: publicPeer, relayed: relayed) == .none)
        #expect(h.server.permissionCount(of: FiveTuple(client: alice, listener: listener)) == 0)
    }

    @Test("CreatePermission without a peer is a bad request and a peer of the wrong family gets 443")
    func createPermissionErrors() {
        var h = Harness()
        _ = Self.allocated(&h)
        #expect(h.authed(.createPermission)?.code == 400)
        #expect(h.authed(.createPermission, [.xorPeerAddress(publicPeer6)])?.code == 443)
    }

    @Test("CreatePermission installs all peers or none")
    func createPermissionAtomic() {
        var h = Harness()
        _ = Self.allocated(&h)
        let denied = SocketAddress("10.0.0.1:1")!
        #expect(h.authed(.createPermission, [.xorPeerAddress(publicPeer), .xorPeerAddress(denied)])?.code == 403)
        #expect(h.server.permissionCount(of: FiveTuple(client: alice, listener: listener)) == 0)
    }

    @Test("the per-allocation permission limit answers 508")
    func permissionLimit() {
        var h = Harness(config: { $0.maxPermissionsPerAllocation = 2 })
        _ = Self.allocated(&h)
        #expect(h.authed(.createPermission, [.xorPeerAddress(SocketAddress("8.8.8.1:1")!)])?.isSuccess == true)
        #expect(h.authed(.createPermission, [.xorPeerAddress(SocketAddress("8.8.8.2:1")!)])?.isSuccess == true)
        #expect(h.authed(.createPermission, [.xorPeerAddress(SocketAddress("8.8.8.1:1")!)])?.isSuccess == true,
                "refreshing an existing permission is always possible")
        #expect(h.authed(.createPermission, [.xorPeerAddress(SocketAddress("8.8.8.3:1")!)])?.code == 508)
    }

    @Test("channel numbers of RFC 5766's wider range (coturn's clients use them) work")
    func legacyChannelRange() {
        var h = Harness()
        let relayed = Self.allocated(&h)
        #expect(h.authed(.channelBind, [.channelNumber(0x6D7D), .xorPeerAddress(publicPeer)])?.isSuccess == true)
        #expect(h.send(channelData(0x6D7D, [5]))
                == .forward(from: relayed, to: publicPeer, payloadOffset: 4, payloadLength: 1, dontFragment: false))
        #expect(h.fromPeer([1], peer: publicPeer, relayed: relayed)
                == .channelData(client: alice, listener: listener, channel: 0x6D7D))
    }

    @Test("a bound channel carries ChannelData both ways, payload in place")
    func channels() {
        var h = Harness()
        let relayed = Self.allocated(&h)
        #expect(h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(publicPeer)])?.isSuccess == true)
        #expect(h.send(channelData(0x4001, [5, 6, 7]))
                == .forward(from: relayed, to: publicPeer, payloadOffset: 4, payloadLength: 3, dontFragment: false))
        #expect(h.fromPeer([1, 2], peer: publicPeer, relayed: relayed)
                == .channelData(client: alice, listener: listener, channel: 0x4001))
        // Another port of the same IP has a permission but no channel: Data indication.
        guard case .dataIndication = h.fromPeer([1], peer: SocketAddress(ip: publicPeer.ip, port: 1), relayed: relayed)
        else { Issue.record("expected a Data indication"); return }
    }

    @Test("the multi-thread data path handles held ChannelData in one call and leaves the rest to the shell")
    func channelDataIfHeld() {
        var h = Harness()
        let relayed = Self.allocated(&h)
        _ = h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(publicPeer)])
        let before = h.server.stats
        func held(_ bytes: [UInt8], from: SocketAddress = alice) -> ClientAction? {
            bytes.withUnsafeBytes { h.server.handleChannelDataIfHeld($0, from: from, listener: listener, now: h.now) }
        }
        #expect(held(channelData(0x4001, [5, 6])) == .forward(from: relayed, to: publicPeer, payloadOffset: 4, payloadLength: 2,
                                                              dontFragment: false))
        #expect(held(channelData(0x4002, [5])) == ClientAction.none, "held allocation, unbound channel: dropped here")
        let stranger = SocketAddress("203.0.113.9:1")!
        #expect(held(channelData(0x4001, [5]), from: stranger) == nil, "no allocation here: the shell looks for the owner")
        let stun = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: .random(), attributes: [])
        #expect(held(stun.encode()) == nil, "STUN goes through handleClient")
        #expect(h.server.stats.channelDataIn == before.channelDataIn + 2)
        #expect(h.server.stats.unexpectedDropped == before.unexpectedDropped + 1)
        #expect(h.server.stats.noAllocationDropped == before.noAllocationDropped, "a miss is not counted here")
    }

    @Test("ChannelData with trailing padding is accepted and ChannelData on an unbound channel is dropped")
    func channelDataEdges() {
        var h = Harness()
        let relayed = Self.allocated(&h)
        _ = h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(publicPeer)])
        #expect(h.send(channelData(0x4001, [5, 6, 7]) + [0])
                == .forward(from: relayed, to: publicPeer, payloadOffset: 4, payloadLength: 3, dontFragment: false))
        #expect(h.send(channelData(0x4002, [5])) == .none)
        var short = channelData(0x4001, [5, 6, 7])
        short.removeLast()
        #expect(h.send(short) == .none, "length field longer than the datagram")
    }

    @Test("ChannelBind enforces the channel range and the one-to-one binding rules")
    func channelBindRules() {
        var h = Harness()
        _ = Self.allocated(&h)
        let other = SocketAddress("8.8.4.4:5000")!
        #expect(h.authed(.channelBind, [.channelNumber(0x3FFF), .xorPeerAddress(publicPeer)])?.code == 400)
        #expect(h.authed(.channelBind, [.channelNumber(0x8000), .xorPeerAddress(publicPeer)])?.code == 400)
        #expect(h.authed(.channelBind, [.channelNumber(0x4001)])?.code == 400)
        #expect(h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(publicPeer)])?.isSuccess == true)
        #expect(h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(publicPeer)])?.isSuccess == true,
                "rebinding the same pair refreshes it")
        #expect(h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(other)])?.code == 400)
        #expect(h.authed(.channelBind, [.channelNumber(0x4002), .xorPeerAddress(publicPeer)])?.code == 400)
        #expect(h.authed(.channelBind, [.channelNumber(0x4002), .xorPeerAddress(publicPeer6)])?.code == 443)
    }

    @Test("an expired channel cannot be rebound to another peer during its 5-minute cooldown")
    func channelCooldown() {
        var h = Harness()
        let relayed = Self.allocated(&h, [.requestedTransport(17), .lifetime(3600)])
        let other = SocketAddress("8.8.4.4:5000")!
        _ = h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(publicPeer)])
        h.advance(seconds: 601)
        #expect(h.server.channelCount(of: FiveTuple(client: alice, listener: listener)) == 0)
        #expect(h.send(channelData(0x4001, [1])) == .none)
        _ = h.authed(.createPermission, [.xorPeerAddress(publicPeer)])
        guard case .dataIndication = h.fromPeer([1], peer: publicPeer, relayed: relayed) else {
            Issue.record("expected a Data indication after the channel expired"); return
        }
        #expect(h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(other)])?.code == 400)
        #expect(h.authed(.channelBind, [.channelNumber(0x4002), .xorPeerAddress(publicPeer)])?.code == 400)
        h.advance(seconds: 300)
        #expect(h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(other)])?.isSuccess == true)
    }

    @Test("ChannelBind installs the peer's permission")
    func channelBindPermission() {
        var h = Harness()
        let relayed = Self.allocated(&h)
        _ = h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(publicPeer)])
        #expect(h.send(sendIndication(to: SocketAddress(ip: publicPeer.ip, port: 1), [1])) != .none)
        #expect(h.server.permissionCount(of: FiveTuple(client: alice, listener: listener)) == 1)
        _ = relayed
    }

    @Test("traffic of a dual-stack allocation leaves from the relayed address of the peer's family")
    func dualStackData() throws {
        var h = Harness()
        let rReply = h.allocate([.requestedTransport(17), .additionalAddressFamily(.v6)])
        let r = try #require(rReply)
        let v6 = try #require(r.xorRelayedAddresses.first { $0.family == .v6 })
        _ = h.authed(.createPermission, [.xorPeerAddress(publicPeer6)])
        #expect(h.send(sendIndication(to: publicPeer6, [1]))
                == .forward(from: v6, to: publicPeer6, payloadOffset: 48, payloadLength: 1, dontFragment: false))
    }

    @Test("data for a deleted allocation is dropped")
    func afterDelete() {
        var h = Harness()
        let relayed = Self.allocated(&h)
        _ = h.authed(.channelBind, [.channelNumber(0x4001), .xorPeerAddress(publicPeer)])
        _ = h.authed(.refresh, [.lifetime(0)])
        #expect(h.send(channelData(0x4001, [1])) == .none)
        #expect(h.fromPeer([1], peer: publicPeer, relayed: relayed) == .none)
    }

    @Test("a Send indication without DATA is dropped as malformed")
    func sendWithoutData() {
        var h = Harness()
        _ = Self.allocated(&h)
        let m = Message(type: MessageType(method: .send, messageClass: .indication), transactionID: .random(),
                        attributes: [.xorPeerAddress(publicPeer)])
        #expect(h.send(m.encode()) == .none)
    }
}
