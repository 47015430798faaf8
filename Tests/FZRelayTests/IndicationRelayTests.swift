import ArgumentParser
import FZCore
import FZLinux
import Logging
import Prometheus
import STUN
import Synchronization
import Testing
import TURN

@testable import FZRelay

#if canImport(Glibc)
import Glibc
#endif

/// Send and Data indications (RFC 8656 §10-§11, no channel) through a real shard on loopback:
/// the DATA of a Send indication leaves the relayed socket as exactly the peer's datagram, and
/// every peer datagram comes back as a Data indication the client can decode, byte for byte what
/// `Message.encode` would have produced.
@Suite("Indications through a shard", .serialized)
struct IndicationRelayTests {
    static func payload(_ count: Int, seed: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) } }

    @Test("Send indications reach the peer as their DATA, and the peer's answers come back as exact Data indications")
    func sendAndDataIndications() throws {
        let lab = try SingleShard(relayPorts: 43000...43999)
        defer { lab.close() }
        let (shard, listen, client, peer) = (lab.shard, lab.listen, lab.client, lab.peer)
        func request(_ method: STUN.Method, _ attrs: [Attribute], nonce: String?) throws -> Message {
            try lab.request(method, attrs, nonce: nonce)
        }
        let (nonce, relayed) = try lab.allocate()
        #expect(try request(.createPermission, [.xorPeerAddress(peer.localAddress)], nonce: nonce)
            .type.messageClass == .successResponse)

        // Client → peer. Plain, with DONT-FRAGMENT and FINGERPRINT, and with SOFTWARE (which the
        // relay reads with its full decoder): the peer gets the DATA value and nothing else.
        let send = MessageType(method: .send, messageClass: .indication)
        let lengths = [0, 1, 2, 3, 4, 5, 100, 1200, 1400]
        for (k, length) in lengths.enumerated() {
            let data = Self.payload(length, seed: k)
            let variants: [[UInt8]] = [
                Message(type: send, transactionID: .random(), attributes: [.xorPeerAddress(peer.localAddress), .data(data)])
                    .encode(),
                Message(type: send, transactionID: .random(),
                        attributes: [.dontFragment, .xorPeerAddress(peer.localAddress), .data(data)]).encode(fingerprint: true),
                Message(type: send, transactionID: .random(),
                        attributes: [.software("test"), .xorPeerAddress(peer.localAddress), .data(data)]).encode(),
            ]
            for bytes in variants {
                _ = try bytes.withUnsafeBytes { try client.send($0, to: listen) }
                let atPeer = try #require(receiveOne(peer))
                #expect(atPeer.bytes == data, "\(length) bytes")
                #expect(atPeer.from == relayed)
            }
        }
        // A wrong FINGERPRINT is dropped: the next datagram at the peer is the one sent after it.
        var corrupt = Message(type: send, transactionID: .random(), attributes: [.xorPeerAddress(peer.localAddress), .data([1])])
            .encode(fingerprint: true)
        corrupt[corrupt.count - 1] ^= 0xFF
        _ = try corrupt.withUnsafeBytes { try client.send($0, to: listen) }
        let marker = Message(type: send, transactionID: .random(), attributes: [.xorPeerAddress(peer.localAddress), .data([2, 2])])
        _ = try marker.encode().withUnsafeBytes { try client.send($0, to: listen) }
        #expect(receiveOne(peer)?.bytes == [2, 2])

        // Peer → client: every answer comes back as a Data indication from the peer, with a fresh ID.
        var ids = Set<TransactionID>()
        let dataType = MessageType(method: .data, messageClass: .indication)
        for (k, length) in (lengths + [1900]).enumerated() {
            let data = Self.payload(length, seed: 100 + k)
            _ = try data.withUnsafeBytes { try peer.send($0, to: relayed) }
            let back = try #require(receiveOne(client))
            #expect(back.from == listen)
            let m = try Message.decode(back.bytes)
            #expect(m.type == dataType)
            #expect(m.xorPeerAddresses == [peer.localAddress])
            #expect(m.data == data, "\(length) bytes")
            let expected = Message(type: dataType, transactionID: m.transactionID,
                                   attributes: [.xorPeerAddress(peer.localAddress), .data(data)]).encode()
            #expect(back.bytes == expected)
            ids.insert(m.transactionID)
        }
        #expect(ids.count == lengths.count + 1)

        // A datagram whose Data indication would not fit a send slot is dropped and counted.
        _ = try Self.payload(2100, seed: 1).withUnsafeBytes { try peer.send($0, to: relayed) }
        _ = try ([3, 3, 3] as [UInt8]).withUnsafeBytes { try peer.send($0, to: relayed) }
        let after = try #require(receiveOne(client))
        #expect(try Message.decode(after.bytes).data == [3, 3, 3])
        let stats = Mutex<ServerStats?>(nil)
        shard.value.loop.execute { stats.withLock { $0 = shard.value.server.stats } }
        #expect(waitFor { stats.withLock { $0 != nil } })
        let s = try #require(stats.withLock { $0 })
        #expect(s.oversizeDropped == 1)
        #expect(s.malformedDropped == 1)
        #expect(s.sendIndicationsIn == UInt64(3 * lengths.count + 1))
        #expect(s.relayedBytesToPeers == UInt64(3 * lengths.reduce(0, +) + 2))
    }
}
