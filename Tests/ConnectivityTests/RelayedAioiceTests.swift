import FZCore
import FZLinux
import Foundation
import Testing

@testable import Connectivity

#if canImport(Glibc)
import Glibc
#endif

/// The engine against aioice with **relayed** candidates: an fz `ConnectivityNode` allocates on a
/// real relay (fz-relay, then coturn's turnserver) with `relayOnly` (its only candidate is the
/// relayed one, and nothing leaves from the bare socket), so every pair goes through the relay;
/// aioice offers its host candidate. Both roles.
/// Data flows both ways over the nominated pair (ours: ChannelData through the allocation).
@Suite("Engine against aioice through a relay", .serialized)
struct RelayedAioiceTests {
    @Test("through fz-relay", arguments: [IceRole.controlling, .controlled])
    func fzRelay(role: IceRole) throws {
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
        try exercise(role: role, relay: SocketAddress(IPv4Address.loopback, port), log: server)
    }

    @Test("through coturn's turnserver", arguments: [IceRole.controlling, .controlled])
    func coturn(role: IceRole) throws {
        let port = try freeUDPPort()
        let server = try RelayProcess(
            "/usr/bin/turnserver",
            ["-n", "--listening-ip", "127.0.0.1", "-L", "127.0.0.1", "-p", "\(port)", "--relay-ip", "127.0.0.1",
             "--min-port", "40000", "--max-port", "59999", "--lt-cred-mech", "--user", "alice:secret", "-r", realm,
             "--allow-loopback-peers", "--no-tcp", "--no-tls", "--no-dtls", "--no-cli", "--log-file", "stdout",
             "--simple-log"],
            port: port)
        defer { server.stop() }
        try exercise(role: role, relay: SocketAddress(IPv4Address.loopback, port), log: server)
    }

    func exercise(role: IceRole, relay: SocketAddress, log: RelayProcess) throws {
        let scriptURL = FileManager.default.temporaryDirectory.appendingPathComponent("fz-ice-aioice-relayed-\(getpid()).py")
        try IceAioiceInteropTests.script.write(to: scriptURL, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: scriptURL) }
        let socket = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))
        defer { socket.close() }
        var config = NodeConfig(role: role, sockets: [socket.localAddress], hostAddresses: [])
        config.relayOnly = true
        var node = ConnectivityNode<Int>(config: config)
        node.setRelays([NodeRelay(id: "r", name: "relay", address: relay, credentials: TURNCredentials(username: "alice", password: "secret"))],
                       now: MonotonicClock.now())
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var events: [NodeEvent<Int>] = []
        var data: [[UInt8]] = []

        func pump(until done: () -> Bool, within limit: Duration, extra: Int32? = nil) -> Bool {
            let end = MonotonicClock.now() + limit
            while true {
                while let t = node.pollTransmit() { _ = try? t.bytes.withUnsafeBytes { try socket.send($0, to: t.destination) } }
                while let e = node.pollEvent() { events.append(e) }
                if done() { return true }
                let now = MonotonicClock.now()
                if now >= end { return false }
                let ms = Int32(clamping: max(0, (min(end, node.nextDeadline) - now).nanosecondsClamped / 1_000_000) + 1)
                var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)]
                _ = poll(&fds, 1, min(ms, 20))
                if fds[0].revents & Int16(POLLIN) != 0,
                   case .processed(let (n, from))? = try? buffer.withUnsafeMutableBytes({ try socket.receive(into: $0) }) {
                    let input = buffer.withUnsafeBytes {
                        node.handleInbound(UnsafeRawBufferPointer(rebasing: $0[0..<n]), from: from, socket: socket.localAddress,
                                           now: MonotonicClock.now())
                    }
                    switch input {
                    case .handled: break
                    case .notMine: data.append(Array(buffer[0..<n]))
                    case .relayedData(let range, _, _, _): data.append(Array(buffer[range]))
                    }
                }
                let after = MonotonicClock.now()
                if node.nextDeadline <= after { node.handleTimeout(now: after) }
            }
        }

        // The allocation first: its relayed candidate is all we signal.
        let allocated = pump(until: { node.relayStatus.first?.relayed != nil }, within: .seconds(5))
        try #require(allocated, "no allocation: \(events)\n\(log.output())")
        try #require(node.relayStatus.first?.relayed != nil)

        let process = Process()
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", scriptURL.path, role == .controlling ? "controlled" : "controlling"]
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        defer {
            try? stdin.fileHandleForWriting.close()
            let end = MonotonicClock.now() + .seconds(3)
            while process.isRunning, MonotonicClock.now() < end { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        var lines = LineReader(fd: stdout.fileHandleForReading.fileDescriptor)
        let first = lines.next(within: .seconds(10))
        let hello = try #require(first, "aioice said nothing")
        let peer = try #require(try JSONSerialization.jsonObject(with: Data(hello.utf8)) as? [String: Any])
        let local = IceCredentials.random()
        let now0 = MonotonicClock.now()
        node.connect(1, local: local, remote: IceCredentials(ufrag: try #require(peer["ufrag"] as? String),
                                                           password: try #require(peer["pwd"] as? String)), now: now0)
        for line in try #require(peer["candidates"] as? [String]) { node.addRemoteCandidate(try Candidate(parsing: line), for: 1, now: now0) }
        node.setRemoteEndOfCandidates(for: 1, now: now0)
        let ours: [String: Any] = ["ufrag": local.ufrag, "pwd": local.password,
                                   "candidates": node.localCandidates.map(\.line)]
        stdin.fileHandleForWriting.write(try JSONSerialization.data(withJSONObject: ours) + Data("\n".utf8))

        let connected = pump(until: { node.path(of: 1) != nil }, within: .seconds(10))
        try #require(connected, "no path: \(events)\n\(log.output())")
        guard case .relayed(let server, _) = node.path(of: 1) else {
            Issue.record("expected a relayed path, got \(String(describing: node.path(of: 1)))")
            return
        }
        #expect(server == relay)
        let ping = Array("ping from fz".utf8)
        var peerSaid: [String] = []
        let ponged = pump(until: {
            while let l = lines.next(within: .zero) { peerSaid.append(l) }
            if data.contains(Array("pong:".utf8) + ping) { return true }
            if let t = node.sendData(to: 1, ping, now: MonotonicClock.now()) {
                _ = try? t.bytes.withUnsafeBytes { try socket.send($0, to: t.destination) }
            }
            return false
        }, within: .seconds(10))
        #expect(ponged, "no pong: \(events); aioice said \(peerSaid)\n\(log.output())")
        #expect(node.selectedPair(of: 1)?.isRelayed == true)
    }
}
