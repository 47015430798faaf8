import ArgumentParser
import FZCore
import FZLinux
import Logging
import Prometheus
import Synchronization
import STUN
import Testing
import TURN

@testable import FZRelay

#if canImport(Glibc)
import Glibc
#endif

/// The relay's UDP GRO/GSO paths through real sockets: a client and a peer that send bursts with
/// GSO (as wireguard-go and quinn do) make the kernel hand the relay whole runs in one read; every
/// datagram of a run must be relayed on its own, and the runs the relay sends back must arrive as
/// the same datagrams a one-by-one relay would send.
@Suite("Relay offloads", .serialized, .enabled(if: SocketOptions.supportsUDPSegment && SocketOptions.supportsUDPGRO))
struct OffloadTests {
    /// Reads `count` datagrams (bounded wait, no fixed sleep) from a plain socket.
    static func receive(_ socket: UDPSocket, count: Int) -> [(bytes: [UInt8], from: SocketAddress)] {
        var got: [(bytes: [UInt8], from: SocketAddress)] = []
        var buf = [UInt8](repeating: 0, count: 2048)
        while got.count < count {
            var pfd = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 3000) == 1 else { break }
            while case .processed(let (n, from))? = try? buf.withUnsafeMutableBytes({ try socket.receive(into: $0) }) {
                got.append((Array(buf[0..<n]), from))
            }
        }
        return got
    }

    static func burst(_ datagrams: [[UInt8]], from socket: UDPSocket, to destination: SocketAddress) -> SendQueue {
        let queue = SendQueue(count: 64, capacity: 2048, segmentation: true)
        for d in datagrams { _ = d.withUnsafeBytes { queue.enqueue($0, to: destination) } }
        #expect(queue.flush(on: socket) == (sent: datagrams.count, dropped: 0))
        return queue
    }

    @Test("GSO bursts both ways: every datagram relayed, each with its own ChannelData header, and sent back segmented")
    func burstsBothWays() throws {
        let lab = try SingleShard(relayPorts: 42000...42999)
        defer { lab.close() }
        let (shard, listen, client, peer) = (lab.shard, lab.listen, lab.client, lab.peer)
        func request(_ method: STUN.Method, _ attrs: [Attribute], nonce: String?) throws -> Message {
            try lab.request(method, attrs, nonce: nonce)
        }
        let (nonce, relayed) = try lab.allocate()
        #expect(try request(.channelBind, [.channelNumber(0x4002), .xorPeerAddress(peer.localAddress)], nonce: nonce)
            .type.messageClass == .successResponse)

        // Client → peer: 20 ChannelData frames of 300 B (the last 120 B) in one GSO burst.
        let payloads = (0..<20).map { k in (0..<(k == 19 ? 120 : 300)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ k) } }
        let frames = payloads.map { p -> [UInt8] in
            var f = [UInt8](repeating: 0, count: 4)
            f.withUnsafeMutableBytes { ChannelData.writeHeader(channel: 0x4002, length: p.count, to: $0.baseAddress!) }
            return f + p
        }
        let clientQueue = Self.burst(frames, from: client, to: listen)
        defer { clientQueue.deallocate() }
        #expect(clientQueue.totalSegmented == 20, "the client's burst left as one GSO message")
        let atPeer = Self.receive(peer, count: 20)
        #expect(atPeer.map(\.bytes) == payloads)
        #expect(Set(atPeer.map(\.from)) == [relayed])

        // Peer → client: 16 datagrams of 200 B in one GSO burst come back as 16 ChannelData frames.
        let answers = (0..<16).map { k in [UInt8](repeating: UInt8(k), count: 200) }
        let peerQueue = Self.burst(answers, from: peer, to: relayed)
        defer { peerQueue.deallocate() }
        let back = Self.receive(client, count: 16)
        #expect(back.map(\.bytes) == answers.map { [0x40, 0x02, 0x00, 200] + $0 })
        #expect(Set(back.map(\.from)) == [listen])

        // Both runs reached the relay as GRO reads and left it as GSO messages (read on the loop thread).
        let counted = Mutex<(UInt64, UInt64, Int)>((0, 0, 0))
        let done = Mutex(false)
        shard.value.loop.execute {
            counted.withLock { $0 = (shard.value.coalescedReads, shard.value.coalescedDatagrams, shard.value.segmentedSent) }
            done.withLock { $0 = true }
        }
        #expect(waitFor { done.withLock { $0 } })
        let (reads, datagrams, segmented) = counted.withLock { $0 }
        #expect(reads >= 2)
        #expect(datagrams == 36)
        #expect(segmented == 36)
    }
}



/// Polls `condition` (bounded) until it holds.
func waitFor(_ condition: () -> Bool) -> Bool {
    let deadline = MonotonicClock.now() + .seconds(5)
    while MonotonicClock.now() < deadline {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}
