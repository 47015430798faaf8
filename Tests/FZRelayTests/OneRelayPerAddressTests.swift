import ArgumentParser
import FZCore
import FZLinux
import Logging
import Prometheus
import STUN
import Testing

@testable import FZRelay

#if canImport(Glibc)
import Glibc
#endif

/// Issue 16 item 4: a second relay on an address and port another relay serves refuses to start,
/// instead of joining the first one's SO_REUSEPORT group and taking part of its clients.
@Suite("One relay per address", .serialized)
struct OneRelayPerAddressTests {
    static func start(port: UInt16, threads: Int, relayPorts: ClosedRange<Int>) throws -> [LoopConfined<RelayShard>] {
        let settings = try RelayCommand.parse([
            "--listening-ip", "127.0.0.1", "--listening-port", "\(port)", "--threads", "\(threads)", "--user", "u:p",
            "--realm", "r", "--min-port", "\(relayPorts.lowerBound)", "--max-port", "\(relayPorts.upperBound)",
        ]).settings()
        return try RelayDaemon.makeShards(
            settings: settings, directory: ShardDirectory(shards: threads),
            metrics: RelayMetrics(registry: PrometheusCollectorRegistry(), shards: threads), logger: Logger(label: "test"))
    }

    static func binding(_ port: UInt16) throws -> Message? {
        let client = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))
        defer { client.close() }
        let m = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: .random())
        _ = try m.encode().withUnsafeBytes { try client.send($0, to: SocketAddress(IPv4Address.loopback, port)) }
        guard let answer = receiveOne(client) else { return nil }
        return try Message.decode(answer.bytes)
    }

    @Test("a second relay on a served address fails with 'address in use' naming it, and the first keeps serving",
          arguments: [(2, 2), (1, 2), (2, 1), (1, 1)])
    func secondRelayIsRefused(threads: (first: Int, second: Int)) throws {
        let port = try ShardHandoverTests.freePort()
        let first = try Self.start(port: port, threads: threads.first, relayPorts: 42000...42999)
        let loops = try first.map { try $0.value.loop.start(name: "test-shard") }
        defer {
            for s in first {
                s.value.loop.execute { s.value.closeAll() }
                s.value.loop.stop()
            }
            for t in loops { t.join() }
        }
        let error = #expect(throws: AddressInUse.self) {
            _ = try Self.start(port: port, threads: threads.second, relayPorts: 43000...43999)
        }
        #expect(error?.address == SocketAddress(IPv4Address.loopback, port))
        #expect(error?.description.hasPrefix("address in use: 127.0.0.1:\(port) (UDP)") == true)
        let answer = try #require(try Self.binding(port), "the first relay still answers")
        #expect(answer.type == MessageType(method: .binding, messageClass: .successResponse))
    }

    @Test("the start-up lock is held only while the shards bind")
    func startUpLockIsReleasedAfterStart() throws {
        let port = try ShardHandoverTests.freePort()
        let shards = try Self.start(port: port, threads: 2, relayPorts: 44000...44999)
        defer { for s in shards { s.value.closeAll() } }
        // A relay on another address with the same port may start now.
        let lock = try AbstractLock(name: ListenerClaim.lockName(port: port))
        lock.release()
    }

    @Test("the relay's own shards still share the port (SO_REUSEPORT among themselves)")
    func shardsShareThePort() throws {
        let port = try ShardHandoverTests.freePort()
        let shards = try Self.start(port: port, threads: 3, relayPorts: 45000...45999)
        defer { for s in shards { s.value.closeAll() } }
        #expect(shards.count == 3)
        #expect(shards.allSatisfy { $0.value.listeningAddresses == [SocketAddress(IPv4Address.loopback, port)] })
    }
}
