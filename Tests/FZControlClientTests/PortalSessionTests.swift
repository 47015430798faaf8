import FZControl
import FZControlClient
import Foundation
import Logging
import Synchronization
import Testing

/// The session against the real fz-portal binary: started, provisioned with its own CLI,
/// killed, stopped (SIGSTOP: heartbeats go unanswered), terminated and restarted.
@Suite("Portal session against the real fz-portal", .serialized)
struct PortalSessionTests {
    @Test("connects and gets init; comes back after kill -9, a missed heartbeat and the portal's reconnect; a bad token stops it")
    func reconnects() async throws {
        let portal = try RealPortal()
        defer { portal.stop() }
        try portal.start()
        let site = try portal.cli(["site", "create", "session-test"])["id"] as! String
        let token = try portal.cli(["token", "create", "--scope", "site", "--subject", site])["secret"] as! String
        let key = PresharedKey.random().base64  // any 32 bytes make a WireGuard public key on the wire

        var configuration = SessionConfiguration()
        configuration.heartbeat = .milliseconds(300)
        configuration.backoff = Backoff(initial: .milliseconds(50), cap: .milliseconds(400))
        let session = PortalSession<ToGateway, FromGateway>(
            url: try PortalURL("http://127.0.0.1:\(portal.port)"), path: "/api/v1/ws/gateway",
            query: [("public_key", key), ("name", "gw-session")], token: token, configuration: configuration,
            logger: Logger(label: "test.session"))
        let events = EventLog<ToGateway>()
        let runner = Task { try await session.run { await events.append($0) } }
        defer { runner.cancel() }

        let first = try await events.nextInit(within: .seconds(20))
        #expect(session.send(.ping))
        _ = try await events.next(within: .seconds(15)) { if case .message(.pong) = $0 { true } else { false } }

        // kill -9: the socket dies with the process; the session notices and comes back to the
        // restarted portal (same database: the same gateway id).
        portal.signal(SIGKILL)
        _ = try await events.next(within: .seconds(15)) { if case .disconnected = $0 { true } else { false } }
        try portal.start()
        #expect(try await events.nextInit(within: .seconds(20)).gatewayId == first.gatewayId)

        // SIGSTOP: the process is alive but answers nothing; two heartbeats later the session
        // gives up on the connection. After SIGCONT it connects again.
        portal.signal(SIGSTOP)
        _ = try await events.next(within: .seconds(15)) { if case .disconnected = $0 { true } else { false } }
        portal.signal(SIGCONT)
        #expect(try await events.nextInit(within: .seconds(20)).gatewayId == first.gatewayId)

        // SIGTERM: the portal sends `reconnect` and closes; the session comes back once it is up.
        portal.signal(SIGTERM)
        let reason = try await events.next(within: .seconds(20)) { if case .disconnected = $0 { true } else { false } }
        if case .disconnected(let r) = reason { #expect(r.contains("reconnect")) }
        portal.waitExit()
        try portal.start()
        #expect(try await events.nextInit(within: .seconds(20)).gatewayId == first.gatewayId)
        #expect(session.stats.connects == 4)

        // A token the portal does not know: refused with 401, not retried.
        let bad = PortalSession<ToGateway, FromGateway>(
            url: try PortalURL("http://127.0.0.1:\(portal.port)"), path: "/api/v1/ws/gateway", query: [("public_key", key)],
            token: "fz_not_a_token", configuration: configuration, logger: Logger(label: "test.bad"))
        let start = ContinuousClock.now
        do {
            try await bad.run { _ in }
            Issue.record("a refused session must throw")
        } catch let refused as SessionRefused {
            #expect(refused.status == 401)
        }
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(bad.stats.connects == 0)
    }
}

/// Events as they arrive, awaited with a deadline.
actor EventLog<M: PortalMessage> {
    private var events: [SessionEvent<M>] = []
    private var read = 0

    func append(_ e: SessionEvent<M>) { events.append(e) }

    private func take(_ match: (SessionEvent<M>) -> Bool) -> SessionEvent<M>? {
        while read < events.count {
            let e = events[read]
            read += 1
            if match(e) { return e }
        }
        return nil
    }

    /// The next event (after those already taken) that matches, within `within`.
    func next(within: Duration, _ match: @Sendable (SessionEvent<M>) -> Bool) async throws -> SessionEvent<M> {
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            if let e = take(match) { return e }
            try await Task.sleep(for: .milliseconds(10))  // polling a local array, not waiting out a race
        }
        throw TimeoutError(what: "no matching session event within \(within); saw \(events.map { "\($0)" })")
    }
}

extension EventLog where M == ToGateway {
    func nextInit(within: Duration) async throws -> GatewayInit {
        let e = try await next(within: within) { if case .message(.initialize) = $0 { true } else { false } }
        guard case .message(.initialize(let i)) = e else { throw TimeoutError(what: "not an init") }
        return i
    }
}

struct TimeoutError: Error, CustomStringConvertible {
    var what: String
    var description: String { what }
}

/// The fz-portal binary on a loopback port with a database of its own; every process it starts
/// is stopped by PID at the end.
final class RealPortal: @unchecked Sendable {
    let binary: String
    let directory: URL
    let port: Int
    private(set) var process: Process?
    private(set) var adminToken: String?

    init() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let candidates: [String?] = [ProcessInfo.processInfo.environment["FZ_PORTAL_BIN"], root.appendingPathComponent(".build/debug/fz-portal").path]
        guard let bin = candidates.compactMap({ $0 }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TimeoutError(what: "fz-portal binary not found (build it: swift build --product fz-portal, or set FZ_PORTAL_BIN)")
        }
        binary = bin
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fz-session-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = try Self.freePort()
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = [
            "serve", "--listen", "127.0.0.1:\(port)", "--database-url", "sqlite://\(directory.path)/portal.sqlite", "--log-level", "warning",
        ]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        // First start: the admin token is the first line on stdout. Later starts print nothing.
        if adminToken == nil {
            let line = try Self.readLine(out.fileHandleForReading, within: .seconds(20))
            guard line.contains("Initial admin token"), let t = line.split(separator: " ").last else {
                throw TimeoutError(what: "unexpected first line: \(line)")
            }
            adminToken = String(t)
        }
        try waitReady(within: .seconds(20))
    }

    func signal(_ s: Int32) {
        if let pid = process?.processIdentifier, pid > 0 { kill(pid, s) }
    }

    func waitExit() { process?.waitUntilExit() }

    func stop() {
        guard let p = process else { return }
        if p.isRunning {
            kill(p.processIdentifier, SIGCONT)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs an admin subcommand of the same binary and answers its JSON.
    func cli(_ args: [String]) throws -> [String: Any] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args + ["--portal-url", "http://127.0.0.1:\(port)"]
        p.environment = ["FZ_PORTAL_TOKEN": adminToken ?? "", "PATH": "/usr/bin:/bin"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TimeoutError(what: "fz-portal \(args) failed: \(String(decoding: data, as: UTF8.self))")
        }
        return o
    }

    private func waitReady(within: Duration) throws {
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            guard process?.isRunning == true else { throw TimeoutError(what: "fz-portal exited at start") }
            if Self.httpStatus(port: port, path: "/readyz") == 200 { return }
            usleep(20_000)
        }
        throw TimeoutError(what: "fz-portal not ready within \(within)")
    }

    static func readLine(_ h: FileHandle, within: Duration) throws -> String {
        let deadline = ContinuousClock.now + within
        var buffer = Data()
        let fd = h.fileDescriptor
        while ContinuousClock.now < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            var byte: UInt8 = 0
            guard read(fd, &byte, 1) == 1 else { break }
            if byte == UInt8(ascii: "\n") { return String(decoding: buffer, as: UTF8.self) }
            buffer.append(byte)
        }
        throw TimeoutError(what: "no line on stdout within \(within)")
    }

    /// A bare HTTP/1.1 GET on loopback: the status code, or nil when nothing answers.
    static func httpStatus(port: Int, path: String) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else { return nil }
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        guard request.withCString({ send(fd, $0, strlen($0), 0) }) > 0 else { return nil }
        var reply = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &reply, reply.count, 0)
        guard n > 12 else { return nil }
        return Int(String(decoding: reply[9..<12], as: UTF8.self))
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let r = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Int32 in
                guard bind(fd, p, len) == 0 else { return -1 }
                return getsockname(fd, p, &len)
            }
        }
        guard r == 0 else { throw TimeoutError(what: "no free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
