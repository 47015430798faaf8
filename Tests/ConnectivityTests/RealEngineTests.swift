import FZCore
import FZLinux
import Foundation
import STUN
import Testing

@testable import Connectivity

#if canImport(Glibc)
import Glibc
#endif

/// Two `ConnectivityNode`s, each on its own UDP socket on 127.0.0.1, connect through a real relay
/// (coturn's `turnserver`, and the fz-relay binary) and exchange data over relayed pairs: only
/// relayed candidates are signalled, so every working pair goes through the relay. One thread,
/// poll(2), every wait bounded; the relay is stopped by its PID.
@Suite("Two engines through a real relay", .serialized)
struct RealEngineTests {
    @Test("through coturn's turnserver")
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
        try exchange(relay: SocketAddress(IPv4Address.loopback, port), log: server)
    }

    @Test("through fz-relay")
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
        try exchange(relay: SocketAddress(IPv4Address.loopback, port), log: server)
    }

    func exchange(relay: SocketAddress, log: RelayProcess) throws {
        let pair = try EnginePair(relay: relay)
        defer { pair.close() }
        pair.connect()
        let connected = pair.run(for: .seconds(5)) { p in p.paths.allSatisfy { $0 != nil } }
        try #require(connected, "no path: \(pair.events)\n\(log.output())")
        for (i, pairUsed) in pair.selected.enumerated() {
            let used = try #require(pairUsed)
            #expect(used.isRelayed, "engine \(i) selected \(used)")
        }
        // Data both ways over the selected paths, framed by each node.
        let ok = pair.run(for: .seconds(5)) { p in
            p.sendData()
            return p.received.allSatisfy { $0 >= 20 }
        }
        #expect(ok, "received \(pair.received): \(pair.events)\n\(log.output())")
    }
}

/// Two nodes on two loopback sockets; signalling between them passes relayed candidates only.
final class EnginePair {
    var nodes: [ConnectivityNode<Int>]
    let sockets: [UDPSocket]
    var events: [[NodeEvent<Int>]] = [[], []]
    var received = [0, 0]
    private var buffer = [UInt8](repeating: 0, count: 65_536)
    private var lastSend = Timestamp.zero

    init(relay: SocketAddress) throws {
        sockets = [try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0)),
                   try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))]
        nodes = sockets.enumerated().map { i, s in
            ConnectivityNode(config: NodeConfig(role: i == 0 ? .controlling : .controlled, sockets: [s.localAddress], hostAddresses: []))
        }
        let now = MonotonicClock.now()
        for i in nodes.indices {
            nodes[i].setRelays([NodeRelay(id: "r", name: "relay", address: relay,
                                          credentials: TURNCredentials(username: "alice", password: "secret"))], now: now)
        }
    }

    func close() { for s in sockets { s.close() } }

    var paths: [NodePath?] { [nodes[0].path(of: 1), nodes[1].path(of: 0)] }
    var selected: [IcePair?] { [nodes[0].selectedPair(of: 1), nodes[1].selectedPair(of: 0)] }

    func connect() {
        let now = MonotonicClock.now()
        let a = IceCredentials.random(), b = IceCredentials.random()
        nodes[0].connect(1, local: a, remote: b, now: now)
        nodes[1].connect(0, local: b, remote: a, now: now)
    }

    func sendData() {
        let now = MonotonicClock.now()
        guard now - lastSend >= .milliseconds(10) else { return }
        lastSend = now
        for i in nodes.indices {
            guard let t = nodes[i].sendData(to: 1 - i, Array("data from \(i)".utf8), now: now) else { continue }
            _ = try? t.bytes.withUnsafeBytes { try sockets[i].send($0, to: t.destination) }
        }
    }

    func flush() {
        let now = MonotonicClock.now()
        for i in nodes.indices {
            while let t = nodes[i].pollTransmit() {
                _ = try? t.bytes.withUnsafeBytes { try sockets[i].send($0, to: t.destination) }
            }
            while let e = nodes[i].pollEvent() {
                events[i].append(e)
                if case .localCandidate(_, let c) = e, c.kind == .relayed {
                    nodes[1 - i].addRemoteCandidate(c, for: i, now: now)
                }
            }
        }
    }

    func run(for limit: Duration, until done: (EnginePair) -> Bool) -> Bool {
        let end = MonotonicClock.now() + limit
        while true {
            flush()
            if done(self) { return true }
            let now = MonotonicClock.now()
            if now >= end { return false }
            let wake = min(end, nodes[0].nextDeadline, nodes[1].nextDeadline)
            let ms = Int32(clamping: max(0, (wake - now).nanosecondsClamped / 1_000_000) + 1)
            var fds = sockets.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            _ = poll(&fds, nfds_t(fds.count), min(ms, 10))
            for i in sockets.indices where fds[i].revents & Int16(POLLIN) != 0 {
                guard case .processed(let (n, from))? = try? buffer.withUnsafeMutableBytes({ try sockets[i].receive(into: $0) })
                else { continue }
                let input = buffer.withUnsafeBytes {
                    nodes[i].handleInbound(UnsafeRawBufferPointer(rebasing: $0[0..<n]), from: from, socket: sockets[i].localAddress,
                                           now: MonotonicClock.now())
                }
                switch input {
                case .handled: break
                case .notMine, .relayedData: received[i] += 1
                }
            }
            let after = MonotonicClock.now()
            for i in nodes.indices where nodes[i].nextDeadline <= after { nodes[i].handleTimeout(now: after) }
        }
    }
}
