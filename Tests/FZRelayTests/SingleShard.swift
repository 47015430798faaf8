import ArgumentParser
import FZCore
import FZLinux
import Logging
import Prometheus
import STUN

@testable import FZRelay

#if canImport(Glibc)
import Glibc
#endif

/// One real shard on a free loopback port (user `u:p`, realm `r`, loopback peers allowed), its
/// loop on its own thread, with a client and a peer socket: the set-up the data-path tests share.
/// `close()` stops the loop and closes everything.
final class SingleShard {
    let shard: LoopConfined<RelayShard>
    let listen: SocketAddress
    let client: UDPSocket
    let peer: UDPSocket
    private let thread: EventLoopThread

    /// - Parameter relayPorts: the shard's relay port range (distinct per test, so tests never
    ///   race for one port).
    init(relayPorts: ClosedRange<Int>) throws {
        let port = try ShardHandoverTests.freePort()
        let settings = try RelayCommand.parse([
            "--listening-ip", "127.0.0.1", "--listening-port", "\(port)", "--threads", "1", "--user", "u:p",
            "--realm", "r", "--allow-loopback-peers", "--min-port", "\(relayPorts.lowerBound)",
            "--max-port", "\(relayPorts.upperBound)",
        ]).settings()
        let directory = ShardDirectory(shards: 1)
        let metrics = RelayMetrics(registry: PrometheusCollectorRegistry(), shards: 1)
        shard = try RelayDaemon.makeShards(settings: settings, directory: directory, metrics: metrics,
                                           logger: Logger(label: "test"))[0]
        thread = try shard.value.loop.start(name: "test-shard")
        listen = SocketAddress(IPv4Address.loopback, port)
        client = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0), receiveBufferSize: 1 << 20)
        peer = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0), receiveBufferSize: 1 << 20)
    }

    func close() {
        let shard = shard
        shard.value.loop.execute { shard.value.closeAll() }
        shard.value.loop.stop()
        thread.join()
        client.close()
        peer.close()
    }

    /// Sends a request from the client (authenticated with `u:p` when `nonce` is given) and
    /// decodes the answer.
    func request(_ method: STUN.Method, _ attrs: [Attribute], nonce: String?) throws -> Message {
        var all = attrs
        var integrity: MessageIntegrity?
        if let nonce {
            all += [.username("u"), .realm("r"), .nonce(nonce)]
            integrity = MessageIntegrity(key: LongTermCredentials.key(username: "u", realm: "r", password: "p"))
        }
        let m = Message(type: MessageType(method: method, messageClass: .request), transactionID: .random(), attributes: all)
        _ = try m.encode(integrity: integrity).withUnsafeBytes { try client.send($0, to: listen) }
        guard let answer = receiveOne(client) else { throw HarnessError.noAnswer(method) }
        return try Message.decode(answer.bytes)
    }

    /// An authenticated allocation: its nonce and relayed address.
    func allocate() throws -> (nonce: String, relayed: SocketAddress) {
        guard let nonce = try request(.allocate, [.requestedTransport(17)], nonce: nil).nonce else {
            throw HarnessError.noNonce
        }
        guard let relayed = try request(.allocate, [.requestedTransport(17)], nonce: nonce).xorRelayedAddresses.first else {
            throw HarnessError.noRelayedAddress
        }
        return (nonce, relayed)
    }

    enum HarnessError: Error {
        case noAnswer(STUN.Method)
        case noNonce
        case noRelayedAddress
    }
}

/// Waits (bounded by `timeoutMs`, no fixed sleep) for one datagram of up to 64 KiB.
func receiveOne(_ socket: UDPSocket, timeoutMs: Int32 = 3000) -> (bytes: [UInt8], from: SocketAddress)? {
    var pfd = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
    guard poll(&pfd, 1, timeoutMs) == 1 else { return nil }
    var buf = [UInt8](repeating: 0, count: 65_536)
    guard case .processed(let (n, from)) = try? buf.withUnsafeMutableBytes({ try socket.receive(into: $0) }) else { return nil }
    return (Array(buf[0..<n]), from)
}
