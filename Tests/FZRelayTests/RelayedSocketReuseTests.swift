import FZCore
import FZLinux
import STUN
import Testing
import TURN

@testable import FZRelay

/// The shard remembers the relayed socket it sent from last (`RelaySocketTable.socket(at:)`).
/// An allocation that ends closes that socket; a new allocation on the same relayed address
/// must send from its own new socket, never from the closed one the table remembered.
@Suite("Relayed sockets reused across allocations", .serialized)
struct RelayedSocketReuseTests {
    @Test("ChannelData leaves from the new socket after the allocation on the same relayed port was deleted")
    func channelDataAfterReallocation() throws {
        // Two relay ports (the fewest a shard takes), one of them held by this test: every
        // allocation gets the other, the address the one before it had.
        let lab = try SingleShard(relayPorts: 44100...44101)
        defer { lab.close() }
        let blocker = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 44101))
        defer { blocker.close() }
        for round in 0..<3 {
            let (nonce, relayed) = try lab.allocate()
            #expect(relayed.port == 44100)
            let bound = try lab.request(.channelBind, [.channelNumber(0x4000), .xorPeerAddress(lab.peer.localAddress)],
                                        nonce: nonce)
            #expect(bound.type.messageClass == .successResponse)
            for k in 0..<3 {
                let payload = [UInt8(round), UInt8(k), 0xAB, 0xCD]
                var datagram = [UInt8](repeating: 0, count: 8)
                datagram[0] = 0x40
                datagram[1] = 0x00
                datagram[3] = UInt8(payload.count)
                datagram.replaceSubrange(4..<8, with: payload)
                _ = try datagram.withUnsafeBytes { try lab.client.send($0, to: lab.listen) }
                let atPeer = try #require(receiveOne(lab.peer), "round \(round), datagram \(k)")
                #expect(atPeer.bytes == payload)
                #expect(atPeer.from == relayed)
            }
            let deleted = try lab.request(.refresh, [.lifetime(0)], nonce: nonce)
            #expect(deleted.type.messageClass == .successResponse)
        }
    }
}
