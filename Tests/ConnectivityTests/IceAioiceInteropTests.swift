import FZCore
import FZLinux
import Foundation
import Testing

@testable import Connectivity

#if canImport(Glibc)
import Glibc
#endif

/// The ICE agent against an implementation nobody here wrote: Python's `aioice`, on 127.0.0.1
/// with host candidates, fz controlling and fz controlled. The I/O driver is this test: one
/// `FZLinux.UDPSocket`, `poll(2)` on it and on the peer's stdout, `MonotonicClock` as `now`.
/// Signalling is one JSON line each way over the peer's stdin/stdout. Every wait is bounded.
@Suite("ICE agent against aioice on loopback", .serialized)
struct IceAioiceInteropTests {
    @Test("fz controlling, aioice controlled: connect and exchange data both ways")
    func fzControlling() throws { try exercise(fzRole: .controlling) }

    @Test("fz controlled, aioice controlling: connect and exchange data both ways")
    func fzControlled() throws { try exercise(fzRole: .controlled) }

    static let script = #"""
        import asyncio, json, sys
        import aioice, aioice.ice
        # aioice skips 127.0.0.1 when gathering; this test lives on loopback.
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

        async def main():
            conn = aioice.Connection(ice_controlling=sys.argv[1] == "controlling", components=1, use_ipv6=False)
            await conn.gather_candidates()
            print(json.dumps({"ufrag": conn.local_username, "pwd": conn.local_password,
                              "candidates": ["candidate:" + c.to_sdp() for c in conn.local_candidates]}), flush=True)
            loop = asyncio.get_running_loop()
            peer = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
            conn.remote_username = peer["ufrag"]
            conn.remote_password = peer["pwd"]
            for c in peer["candidates"]:
                await conn.add_remote_candidate(aioice.Candidate.from_sdp(c[len("candidate:"):]))
            await conn.add_remote_candidate(None)
            await asyncio.wait_for(conn.connect(), 10)
            print(json.dumps({"connected": True}), flush=True)
            data, component = await asyncio.wait_for(conn.recvfrom(), 10)
            await conn.sendto(b"pong:" + data, component)
            print(json.dumps({"received": data.decode()}), flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)  # until the test closes stdin
            await conn.close()

        asyncio.run(main())
        """#

    func exercise(fzRole: IceRole) throws {
        let scriptURL = FileManager.default.temporaryDirectory.appendingPathComponent("fz-ice-aioice-\(getpid()).py")
        try Self.script.write(to: scriptURL, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: scriptURL) }

        let socket = try UDPSocket(bindingTo: SocketAddress(IPv4Address.loopback, 0))
        defer { socket.close() }
        var agent = IceAgent(config: IceAgentConfig(role: fzRole))
        agent.addLocalCandidate(.host(socket.localAddress), now: MonotonicClock.now())

        let process = Process()
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", scriptURL.path, fzRole == .controlling ? "controlled" : "controlling"]
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
        let hello = try #require(first, "aioice said nothing: \(stderrText(stderr, process))")
        let peer = try #require(try JSONSerialization.jsonObject(with: Data(hello.utf8)) as? [String: Any])
        let now0 = MonotonicClock.now()
        agent.setRemoteCredentials(
            IceCredentials(ufrag: try #require(peer["ufrag"] as? String), password: try #require(peer["pwd"] as? String)), now: now0)
        let remoteLines = try #require(peer["candidates"] as? [String])
        try #require(!remoteLines.isEmpty)
        for line in remoteLines { agent.addRemoteCandidate(try Candidate(parsing: line), now: now0) }
        agent.setRemoteEndOfCandidates(now: now0)
        let ours: [String: Any] = [
            "ufrag": agent.localCredentials.ufrag, "pwd": agent.localCredentials.password,
            "candidates": agent.localCandidates.map(\.line),
        ]
        stdin.fileHandleForWriting.write(try JSONSerialization.data(withJSONObject: ours) + Data("\n".utf8))

        var events: [IceEvent] = []
        var peerSaid: [String] = []
        var pong = false
        var nextPing = MonotonicClock.now()
        let ping = Array("ping from fz".utf8)
        var buffer = [UInt8](repeating: 0, count: 2048)
        let end = MonotonicClock.now() + .seconds(15)
        while MonotonicClock.now() < end, !(pong && peerSaid.contains { $0.contains("received") }) {
            while let t = agent.pollTransmit() {
                #expect(t.via == .socket(socket.localAddress))
                _ = try? t.bytes.withUnsafeBytes { try socket.send($0, to: t.destination) }
            }
            while let e = agent.pollEvent() { events.append(e) }
            let now = MonotonicClock.now()
            if let p = agent.selectedPair, !pong, now >= nextPing {
                _ = try? ping.withUnsafeBytes { try socket.send($0, to: p.remote.address) }
                nextPing = now + .milliseconds(200)
            }
            let wake = min(agent.nextDeadline, nextPing, end)
            let ms = Int32(clamping: max(0, (wake - now).nanosecondsClamped / 1_000_000) + 1)
            var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: lines.fd, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, min(ms, 50))
            if fds[0].revents & Int16(POLLIN) != 0,
                case .processed(let (n, from))? = try? buffer.withUnsafeMutableBytes({ try socket.receive(into: $0) })
            {
                let datagram = Array(buffer[0..<n])
                if !agent.handleInbound(datagram, from: from, via: .socket(socket.localAddress), now: MonotonicClock.now()) {
                    if datagram == Array("pong:".utf8) + ping { pong = true }
                }
            }
            if fds[1].revents != 0 { while let l = lines.next(within: .zero) { peerSaid.append(l) } }
            let after = MonotonicClock.now()
            if agent.nextDeadline <= after { agent.handleTimeout(now: after) }
        }
        #expect(pong, "no pong; events \(events); aioice: \(peerSaid) \(stderrText(stderr, process))")
        #expect(peerSaid.contains(#"{"connected": true}"#))
        #expect(peerSaid.contains(#"{"received": "ping from fz"}"#))
        #expect(agent.state == .connected)
        #expect(events.contains { if case .nominated = $0 { true } else { false } }, "\(events)")
        #expect(agent.stats.malformedDropped == 0 && agent.stats.unauthenticatedDropped == 0)
    }

    func stderrText(_ pipe: Pipe, _ process: Process) -> String {
        guard !process.isRunning else { return "(running)" }
        return String(decoding: pipe.fileHandleForReading.availableData, as: UTF8.self)
    }
}

/// Lines from a pipe, read with bounded waits.
struct LineReader {
    let fd: Int32
    var pending: [UInt8] = []

    init(fd: Int32) { self.fd = fd }

    mutating func next(within limit: Duration) -> String? {
        let end = MonotonicClock.now() + limit
        while true {
            if let nl = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                return line
            }
            let left = end - MonotonicClock.now()
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = Int32(clamping: max(0, left.nanosecondsClamped / 1_000_000))
            guard poll(&pfd, 1, ms) == 1 else { return nil }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { return nil }
            pending += chunk[0..<n]
        }
    }
}
