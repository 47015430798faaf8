import FZControl
import FZCore
import Foundation
import Portal
import Synchronization
import Testing
import FZCrypto
@testable import FZPortal

/// A real WebSocket upgrade request over a plain socket: the status line and the body of the
/// answer (a refusal must be the documented status with the JSON error, not a bare 400).
func rawUpgrade(port: Int, _ pathAndQuery: String, token: String) throws -> (status: Int, body: String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ValidationError(field: "socket", reason: "failed") }
    defer { close(fd) }
    var tv = timeval(tv_sec: 15, tv_usec: 0)  // a deadline: CI runs many suites in parallel on 2 cores
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard ok == 0 else { throw ValidationError(field: "connect", reason: "failed") }
    let request = """
        GET \(pathAndQuery) HTTP/1.1\r
        Host: 127.0.0.1:\(port)\r
        Upgrade: websocket\r
        Connection: Upgrade\r
        Sec-WebSocket-Version: 13\r
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
        Authorization: Bearer \(token)\r
        \r

        """
    _ = request.withCString { send(fd, $0, strlen($0), 0) }
    var reply = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &chunk, chunk.count, 0)
        if n <= 0 { break }
        reply += chunk[0..<n]
        let text = String(decoding: reply, as: UTF8.self)
        // Done once the head and the announced body are in (a 101 has no body).
        if let headEnd = text.range(of: "\r\n\r\n") {
            if text.hasPrefix("HTTP/1.1 101") { break }
            let head = text[..<headEnd.lowerBound].lowercased()
            let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
            if text.utf8.count - text[..<headEnd.upperBound].utf8.count >= length { break }
        }
    }
    let text = String(decoding: reply, as: UTF8.self)
    let status = text.count >= 12 ? Int(text.dropFirst(9).prefix(3)) ?? 0 : 0
    let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
    return (status, body)
}

@Suite("Control channel: refusals before the upgrade and key takeover (live WebSockets)", .serialized)
struct UpgradeRefusalTests {
    static func q(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics)! }

    @Test("refusals at the upgrade answer the documented status with the JSON error, and open no WebSocket")
    func refusals() async throws {
        let h = try await ControlHarness()
        try await h.run { port, _ in
            let key = Self.q(Fixture.key(9).base64)
            let bad = try rawUpgrade(port: port, "/api/v1/ws/gateway?public_key=\(key)", token: "fz_garbage")
            #expect(bad.status == 401)
            #expect(bad.body.contains(#""error":"unauthorized""#))
            let scope = try rawUpgrade(port: port, "/api/v1/ws/gateway?public_key=\(key)", token: h.aliceToken)
            #expect(scope.status == 401)
            let field = try rawUpgrade(port: port, "/api/v1/ws/gateway?public_key=nope", token: h.siteToken)
            #expect(field.status == 400)
            #expect(field.body.contains(#""field":"public_key""#))
            let good = try rawUpgrade(port: port, "/api/v1/ws/gateway?public_key=\(key)", token: h.siteToken)
            #expect(good.status == 101)
        }
    }

    @Test("a registered public key does not take over: another token's connection is refused while the first is online, the same token's replaces it, and an offline gateway's authorizations go back only to its own token")
    func takeover() async throws {
        let h = try await ControlHarness()
        let other = try IssuedToken.issue(name: "stolen-site-token", scope: .site, subject: h.site.id.rawValue, now: Fixture.now)
        try await h.store.insert(token: other.token)
        try await h.run { port, _ in
            let (gw, gwID) = try await h.gateway(port, key: 101)
            let (alice, _) = try await h.client(port, key: 1)
            let (auth, _) = try await grant(alice, [gwID: gw], expected: gwID)
            let psk = try #require(auth["preshared_key"])
            let key = Self.q(Fixture.key(101).base64)

            // While it is online: another site token with its key is refused (409); the
            // original keeps working.
            let second = try rawUpgrade(port: port, "/api/v1/ws/gateway?public_key=\(key)", token: other.secret.presented)
            #expect(second.status == 409)
            #expect(second.body.contains(#""field":"public_key""#))
            gw.send(#"{"v":1,"type":"ping"}"#)
            _ = try await gw.next("pong")

            // Offline: a connection with the key but another token gets the gateway's id, and
            // none of its authorizations (no preshared key).
            gw.close()
            #expect(await gw.closed())
            let (thief, thiefInit) = try await h.peer(
                port, "gateway", token: other.secret.presented, ["public_key": Fixture.key(101).base64, "name": "gw101"])
            #expect(thiefInit["gateway_id"] == gwID)
            #expect(thiefInit.array("authorizations").isEmpty)
            thief.close()
            #expect(await thief.closed())

            // The gateway itself, with its own token, gets them back.
            let (back, backInit) = try await h.peer(port, "gateway", token: h.siteToken, ["public_key": Fixture.key(101).base64, "name": "gw101"])
            #expect(backInit.array("authorizations").map { $0["preshared_key"] as? String } == [psk])
            // The same token and key again while `back` is online (it moved to another network
            // and its old connection is not yet known dead): the newcomer replaces it at once.
            let (moved, movedInit) = try await h.peer(port, "gateway", token: h.siteToken, ["public_key": Fixture.key(101).base64, "name": "gw101"])
            #expect(movedInit["gateway_id"] == gwID)
            #expect(movedInit.array("authorizations").map { $0["preshared_key"] as? String } == [psk])
            #expect(await back.closed())
            moved.close()

            // Clients: a second connection with alice's key and another actor's token is refused;
            // the first still gets the answers to its own requests. Alice's own token replaces it.
            let dup = try rawUpgrade(port: port, "/api/v1/ws/client?public_key=\(Self.q(Fixture.key(1).base64))", token: h.malloryToken)
            #expect(dup.status == 409)
            alice.send(#"{"v":1,"type":"ping"}"#)
            _ = try await alice.next("pong")
            let (again, _) = try await h.client(port, key: 1)
            #expect(await alice.closed())
            again.send(#"{"v":1,"type":"ping"}"#)
            _ = try await again.next("pong")
            again.close()
        }
    }

    @Test("an expired token makes no more intents: its connection is closed at expiry (timer) and on the first message after it")
    func tokenExpiry() async throws {
        var h = try await ControlHarness()
        let offset = Mutex<Int64>(0)
        h.clock = WallClock { UnixTime(seconds: Fixture.now.seconds + offset.withLock { $0 }) }
        let soon = try IssuedToken.issue(
            name: "short", scope: .client, subject: h.alice.id.rawValue, now: Fixture.now, expiresAt: UnixTime(seconds: Fixture.now.seconds + 600))
        let verySoon = try IssuedToken.issue(
            name: "shorter", scope: .client, subject: h.alice.id.rawValue, now: Fixture.now, expiresAt: UnixTime(seconds: Fixture.now.seconds + 1))
        try await h.store.insert(token: soon.token)
        try await h.store.insert(token: verySoon.token)
        let harness = h
        try await harness.run { port, _ in
            let h = harness
            let (gw, gwID) = try await h.gateway(port, key: 101)
            let (alice, _) = try await h.client(port, key: 1, token: soon.secret.presented)
            let (_, granted) = try await grant(alice, [gwID: gw], expected: gwID)
            #expect((granted.object["expires_at"] as? Int) == Int(Fixture.now.seconds + 600))

            // The wall clock passes the expiry (e.g. a jump): the next intent closes the
            // connection instead of being granted, and the gateway drops the authorization.
            offset.withLock { $0 = 601 }
            alice.send(requestDB)
            let error = try await alice.next("error")
            #expect(error["code"] == "token_expired")
            #expect(await alice.closed())
            let revoke = try await gw.next("revoke")
            #expect(revoke["resource_id"] == "res_db")
            offset.withLock { $0 = 0 }

            // Without any message: the timer closes it at expiry (1 s).
            let (bob, _) = try await h.client(port, key: 2, token: verySoon.secret.presented)
            let expired = try await bob.next("error", timeout: .seconds(3))
            #expect(expired["code"] == "token_expired")
            #expect(await bob.closed())
        }
    }

    @Test("a token registers a bounded number of new public keys per hour; known keys reconnect freely; other tokens are not affected")
    func registrationLimit() async throws {
        var harness = try await ControlHarness()
        harness.newKeysPerTokenPerHour = 3
        let h = harness
        try await h.run { port, _ in
            for k: UInt8 in 1...3 {
                let (c, _) = try await h.client(port, key: k)
                c.close()
                #expect(await c.closed())
            }
            let fourth = try rawUpgrade(port: port, "/api/v1/ws/client?public_key=\(Self.q(Fixture.key(4).base64))", token: h.aliceToken)
            #expect(fourth.status == 429)
            #expect(fourth.body.contains(#""error":"too_many_registrations""#))
            #expect(try await h.store.clients().count == 3)  // no row for the refused key
            let (again, _) = try await h.client(port, key: 1)  // a known key: a reconnect
            again.close()
            let (other, _) = try await h.client(port, key: 5, token: h.malloryToken)
            other.close()
        }
    }
}
