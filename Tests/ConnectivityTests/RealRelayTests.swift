import FZCore
import FZLinux
import Foundation
import STUN
import Testing

@testable import Connectivity

#if canImport(Glibc)
import Glibc
#endif

/// The TURN client over a real UDP socket on 127.0.0.1 against relays nobody wrote for it:
/// coturn's `turnserver` and the fz-relay binary, each started on a free port and stopped by PID.
/// A local UDP socket echoes what the relay forwards to it. Every wait is bounded.
@Suite("TURN client over real sockets", .serialized)
struct RealRelayTests {
    @Test("against coturn's turnserver: allocate, channel and Send indication data both ways, free")
    func coturn() throws {
        let port = try freeUDPPort()
        let server = try RelayProcess(
            "/usr/bin/turnserver",
            ["-n", "--listening-ip", "127.0.0.1", "-L", "127.0.0.1", "-p", "\(port)", "--relay-ip", "127.0.0.1",
             "--min-port", "40000", "--max-port", "59999", "--lt-cred-mech", "--user", "alice:secret", "-r", realm,
             "--allow-loopback-peers", "--no-tcp", "--no-tls", "--no-dtls", "--no-cli", "--log-file", "stdout",
             "--simple-log"],
            port: port)
        defer { server.stop() }
        // coturn implements neither PASSWORD-ALGORITHMS nor MESSAGE-INTEGRITY-SHA256: plain MD5.
        try exercise(server: SocketAddress(IPv4Address.loopback, port), log: server, algorithm: .md5)
    }

    @Test("against fz-relay: allocate, channel and Send indication data both ways, free")
    func fzRelay() throws {
        let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("fz-relay").path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "no fz-relay at \(binary): swift build --build-tests")
        let port = try freeUDPPort()
        let server = try RelayProcess(
            binary,
            ["--listening-ip", "127.0.0.1", "--listening-port", "\(port)", "--threads", "1", "--user", "alice:secret",
             "--realm", realm, "--allow-loopback-peers", "--min-port", "40000", "--max-port", "59999"],
            port: port)
        defer { server.stop() }
        try exercise(server: SocketAddress(IPv4Address.loopback, port), log: server, algorithm: .sha256)
    }

    func exercise(server: SocketAddress, log: RelayProcess, algorithm: PasswordAlgorithm) throws {
        let config = TURNClientConfig(server: server, credentials: TURNCredentials(username: "alice", password: "secret"))
        let d = try Driver(client: TURNClient(config: config))
        defer { d.close() }
        let start = MonotonicClock.now()
        d.client.allocate(now: start)
        let allocated = d.run(for: .seconds(5)) { $0.relayed != nil || $0.failed }
        try #require(allocated && d.relayed != nil, "no allocation: \(d.events)\n\(log.output())")
        #expect(d.relayed?.ip == .v4(.loopback))
        #expect(d.client.auth?.algorithm == algorithm)
        #expect(d.client.mappedAddress == d.socket.localAddress)

        // A channel to the echo peer, and a permission only (Send/Data indications) to a second one.
        let echo = d.peers[0].localAddress, other = d.peers[1].localAddress
        let channel = try unwrap(d.client.bindChannel(to: echo, now: MonotonicClock.now()))
        d.client.createPermission(for: other.ip, now: MonotonicClock.now())
        // Both peers are on 127.0.0.1, so the ChannelBind installs the permission for both.
        let bound = d.run(for: .seconds(5)) { $0.events.contains(.channelBound(peer: echo, channel: channel)) || $0.failed }
        try #require(bound, "no channel: \(d.events)\n\(log.output())")

        // ChannelData framed in place in a buffer with 4 bytes of headroom.
        let payload = Array("through the relay by channel".utf8)
        var buffer = [UInt8](repeating: 0, count: TURNClient.channelDataHeadroom) + payload
        let length = try #require(buffer.withUnsafeMutableBytes {
            d.client.frameChannelData(to: echo, buffer: $0, payloadLength: payload.count)
        })
        try d.send(Array(buffer[0..<length]))
        #expect(d.run(for: .seconds(3)) { $0.received.contains { $0.peer == echo && $0.payload == payload } },
                "echo by channel: \(d.received)")

        // A peer without a channel: a Send indication out, a Data indication back (the permission
        // for 127.0.0.1 is there twice over).
        let viaIndication = Array("and by indication".utf8)
        let out = try unwrap(d.client.send(to: other, payload: viaIndication, now: MonotonicClock.now()))
        #expect(out.bytes.withUnsafeBytes { PacketKind.classify($0) } == .stun)
        try d.send(out.bytes)
        #expect(d.run(for: .seconds(3)) { $0.received.contains { $0.peer == other && $0.payload == viaIndication } },
                "echo by indication: \(d.received)")
        #expect(d.client.stats.channelDataIn >= 1 && d.client.stats.dataIndicationsIn >= 1)

        d.client.deallocate(now: MonotonicClock.now())
        #expect(d.run(for: .seconds(3)) { $0.events.contains(.deallocated) }, "\(d.events)")
        #expect(d.client.stats.unauthenticatedDropped == 0 && d.client.stats.malformedDropped == 0)
    }
}

/// A free UDP port on 127.0.0.1 (bound and released; the relay binds it right after).
func freeUDPPort() throws -> UInt16 {
    let s = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))
    defer { s.close() }
    return s.localAddress.port
}

/// A UDP socket that echoes every datagram back to its source (the relayed address).
final class EchoPeer {
    let socket: UDPSocket
    var localAddress: SocketAddress { socket.localAddress }
    init() throws { socket = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0)) }
}

/// Runs one client on one socket and two echo peers, single-threaded, with poll(2).
final class Driver {
    var client: TURNClient
    let socket: UDPSocket
    let peers: [EchoPeer]
    var events: [TURNClientEvent] = []
    var received: [(peer: SocketAddress, payload: [UInt8])] = []
    private var buffer = [UInt8](repeating: 0, count: 65_536)

    init(client: TURNClient) throws {
        self.client = client
        socket = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))
        peers = [try EchoPeer(), try EchoPeer()]
    }

    func close() {
        socket.close()
        for p in peers { p.socket.close() }
    }

    var relayed: SocketAddress? { client.relayedAddress }
    var failed: Bool {
        events.contains { if case .allocationFailed = $0 { true } else if case .allocationLost = $0 { true } else { false } }
    }

    func send(_ bytes: [UInt8]) throws {
        _ = try bytes.withUnsafeBytes { try socket.send($0, to: client.config.server) }
    }

    /// Drives the client until `done` or `limit` passes; whether `done` held.
    func run(for limit: Duration, until done: (Driver) -> Bool) -> Bool {
        let end = MonotonicClock.now() + limit
        while true {
            while let t = client.pollTransmit() {
                _ = try? t.bytes.withUnsafeBytes { try socket.send($0, to: t.destination) }
            }
            while let e = client.pollEvent() { events.append(e) }
            if done(self) { return true }
            let now = MonotonicClock.now()
            if now >= end { return false }
            let wake = min(end, client.nextDeadline)
            let ms = Int32(clamping: max(0, (wake - now).nanosecondsClamped / 1_000_000) + 1)
            var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)]
                + peers.map { pollfd(fd: $0.socket.fd, events: Int16(POLLIN), revents: 0) }
            _ = poll(&fds, nfds_t(fds.count), min(ms, 100))
            for (i, peer) in peers.enumerated() where fds[i + 1].revents & Int16(POLLIN) != 0 {
                guard case .processed(let (n, from))? = try? buffer.withUnsafeMutableBytes({ try peer.socket.receive(into: $0) })
                else { continue }
                _ = try? buffer.withUnsafeBytes { try peer.socket.send(UnsafeRawBufferPointer(rebasing: $0[0..<n]), to: from) }
            }
            if fds[0].revents & Int16(POLLIN) != 0,
                case .processed(let (n, from))? = try? buffer.withUnsafeMutableBytes({ try socket.receive(into: $0) })
            {
                let input = buffer.withUnsafeBytes {
                    client.handle(datagram: UnsafeRawBufferPointer(rebasing: $0[0..<n]), from: from, now: MonotonicClock.now())
                }
                if case .data(let p, let range) = input { received.append((p, Array(buffer[range]))) }
            }
            let after = MonotonicClock.now()
            if client.nextDeadline <= after { client.handleTimeout(now: after) }
        }
    }
}

/// A relay process we started: output captured in a temporary file, stopped by its PID.
final class RelayProcess {
    let process = Process()
    let logURL: URL
    private let logHandle: FileHandle

    init(_ path: String, _ arguments: [String], port: UInt16) throws {
        logURL = FileManager.default.temporaryDirectory.appendingPathComponent("turnclient-\(getpid())-\(port).log")
        FileManager.default.createFile(atPath: logURL.path, contents: nil)
        logHandle = try FileHandle(forWritingTo: logURL)
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.filter {
            !$0.key.hasPrefix("FZ_RELAY_") && $0.key != "NOTIFY_SOCKET" && $0.key != "WATCHDOG_USEC"
        }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = logHandle
        process.standardError = logHandle
        try process.run()
        // Ready when a Binding request is answered (bounded: 10 s).
        let probe = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))
        defer { probe.close() }
        let request = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: .random()).encode()
        let end = MonotonicClock.now() + .seconds(10)
        var buffer = [UInt8](repeating: 0, count: 1500)
        while MonotonicClock.now() < end, process.isRunning {
            _ = try? request.withUnsafeBytes { try probe.send($0, to: SocketAddress(IPv4Address.loopback, port)) }
            var pfd = pollfd(fd: probe.fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 50) == 1,
                case .processed? = try? buffer.withUnsafeMutableBytes({ try probe.receive(into: $0) })
            {
                return
            }
        }
        stop()
        throw RelayStartError(output: output())
    }

    struct RelayStartError: Error, CustomStringConvertible {
        var output: String
        var description: String { "relay did not answer a Binding within 10 s:\n\(output)" }
    }

    func output() -> String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// SIGTERM, then SIGKILL after 2 s (coturn can take longer to wind down); only this process, by its PID.
    func stop() {
        let pid = process.processIdentifier
        if process.isRunning, pid > 0 {
            kill(pid, SIGTERM)
            let end = MonotonicClock.now() + .seconds(2)
            while process.isRunning, MonotonicClock.now() < end { usleep(10_000) }
            if process.isRunning { kill(pid, SIGKILL) }
            process.waitUntilExit()
        }
        try? logHandle.close()
        try? FileManager.default.removeItem(at: logURL)
    }
}
