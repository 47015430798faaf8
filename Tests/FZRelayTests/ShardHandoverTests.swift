import ArgumentParser
import FZCore
import FZLinux
import Logging
import Metrics
import Prometheus
import STUN
import Testing
import TURN

@testable import FZRelay

#if canImport(Glibc)
import Glibc
#endif

/// Two shards on one listening address, driven through their real sockets: an allocation made on
/// shard 0 is then addressed through shard 1, as happens when SO_REUSEPORT hashes a 5-tuple to
/// another socket than before.
@Suite("Shards", .serialized)
struct ShardHandoverTests {
    /// Waits (bounded, no fixed sleep) for one datagram on a non-blocking socket.
    static func receive(_ socket: UDPSocket, timeoutMs: Int32 = 3000) -> (bytes: [UInt8], from: SocketAddress)? {
        var pfd = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, timeoutMs) == 1 else { return nil }
        var buf = [UInt8](repeating: 0, count: 2048)
        guard case .processed(let (n, from)) = try? buf.withUnsafeMutableBytes({ try socket.receive(into: $0) }) else { return nil }
        return (Array(buf[0..<n]), from)
    }

    static func freePort() throws -> UInt16 {
        let s = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))
        defer { s.close() }
        return s.localAddress.port
    }

    @Test("an allocation created on one thread is served when its client's datagrams arrive on another thread's socket")
    func handover() throws {
        let port = try Self.freePort()
        let settings = try RelayCommand.parse([
            "--listening-ip", "127.0.0.1", "--listening-port", "\(port)", "--threads", "2", "--user", "u:p",
            "--realm", "r", "--allow-loopback-peers", "--min-port", "41000", "--max-port", "41999",
        ]).settings()
        let directory = ShardDirectory(shards: 2)
        let metrics = RelayMetrics(registry: PrometheusCollectorRegistry(), shards: 2)
        let shards = try RelayDaemon.makeShards(
            settings: settings, directory: directory, metrics: metrics, logger: Logger(label: "test"))
        let threads = try shards.map { try $0.value.loop.start(name: "test-shard") }
        defer {
            for s in shards {
                s.value.loop.execute { s.value.closeAll() }
                s.value.loop.stop()
            }
            for t in threads { t.join() }
        }
        let listen = SocketAddress(IPv4Address.loopback, port)
        let client = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))
        let peer = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))
        defer {
            client.close()
            peer.close()
        }
        let me = client.localAddress

        func via(_ shard: Int, _ bytes: [UInt8]) {
            let s = shards[shard]
            s.value.loop.execute { s.value.inject(bytes, from: me, listener: listen) }
        }
        func request(_ shard: Int, _ method: STUN.Method, _ attrs: [Attribute], nonce: String?) throws -> Message {
            var all = attrs
            var integrity: MessageIntegrity?
            if let nonce {
                all += [.username("u"), .realm("r"), .nonce(nonce)]
                integrity = MessageIntegrity(key: LongTermCredentials.key(username: "u", realm: "r", password: "p"))
            }
            let m = Message(type: MessageType(method: method, messageClass: .request), transactionID: .random(), attributes: all)
            via(shard, m.encode(integrity: integrity))
            let r = try #require(Self.receive(client))
            #expect(r.from == listen, "answers come from the listening address whichever shard sends them")
            return try Message.decode(r.bytes)
        }

        // Allocate through shard 0.
        let nonce = try #require(try request(0, .allocate, [.requestedTransport(17)], nonce: nil).nonce)
        let allocated = try request(0, .allocate, [.requestedTransport(17)], nonce: nonce)
        #expect(allocated.type.messageClass == .successResponse)
        let relayed = try #require(allocated.xorRelayedAddresses.first)
        #expect(settings.portSlice(0).contains(relayed.port))
        #expect(directory.owner(of: FiveTuple(client: me, listener: listen)) == 0)

        // Everything else through shard 1: the nonce from shard 0 is valid there too, and the
        // requests reach the allocation on shard 0.
        let bound = try request(1, .channelBind, [.channelNumber(0x4001), .xorPeerAddress(peer.localAddress)], nonce: nonce)
        #expect(bound.type.messageClass == .successResponse)
        var frame = [UInt8](repeating: 0, count: 4)
        frame.withUnsafeMutableBytes { ChannelData.writeHeader(channel: 0x4001, length: 3, to: $0.baseAddress!) }
        via(1, frame + [7, 8, 9])
        let atPeer = try #require(Self.receive(peer))
        #expect(atPeer.bytes == [7, 8, 9])
        #expect(atPeer.from == relayed)

        // The peer's answer comes back through the owner's relayed socket as ChannelData.
        _ = try ([1, 2] as [UInt8]).withUnsafeBytes { try peer.send($0, to: relayed) }
        let back = try #require(Self.receive(client))
        #expect(back.bytes == [0x40, 0x01, 0x00, 0x02, 1, 2])

        let refreshed = try request(1, .refresh, [.lifetime(0)], nonce: nonce)
        #expect(refreshed.type.messageClass == .successResponse)
        #expect(directory.totalAllocations == 0)
        #expect(shards[1].value.handedOver == 3)  // read after the loops' work: the reply proves it ran
    }

    @Test("a user quota holds across threads")
    func quotaAcrossShards() {
        let directory = ShardDirectory(shards: 2)
        let a = FiveTuple(client: SocketAddress("127.0.0.1:1")!, listener: SocketAddress("127.0.0.1:3478")!)
        let b = FiveTuple(client: SocketAddress("127.0.0.1:2")!, listener: SocketAddress("127.0.0.1:3478")!)
        #expect(directory.admit(a, user: "u", shard: 0, userQuota: 1, totalQuota: 0))
        #expect(!directory.admit(b, user: "u", shard: 1, userQuota: 1, totalQuota: 0))
        directory.release(a, user: "u")
        #expect(directory.admit(b, user: "u", shard: 1, userQuota: 1, totalQuota: 0))
        #expect(directory.owner(of: b) == 1)
    }
}
