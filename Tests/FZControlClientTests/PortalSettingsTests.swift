import FZControl
import FZControlClient
import Foundation
import Testing

@Suite("Portal session settings")
struct PortalSettingsTests {
    @Test("portal URLs: http(s) and ws(s) map to ws(s); anything else is refused naming the flag")
    func urls() throws {
        #expect(try PortalURL("http://127.0.0.1:8080").webSocket("/api/v1/ws/gateway", query: []) == "ws://127.0.0.1:8080/api/v1/ws/gateway")
        #expect(try PortalURL("https://portal.example/").description == "wss://portal.example")
        #expect(try PortalURL("wss://portal.example/fz").webSocket("/api/v1/ws/client", query: [("public_key", "a+b/c=")])
            == "wss://portal.example/fz/api/v1/ws/client?public_key=a%2Bb%2Fc%3D")
        #expect(try PortalURL("ws://[::1]:9000").description == "ws://[::1]:9000")
        for bad in ["ftp://portal", "portal.example:8080", "", "http://", "http://p/?x=1"] {
            #expect(throws: ValidationError.self, "\(bad)") { try PortalURL(bad, flag: "FZ_PORTAL_URL") }
            do { _ = try PortalURL(bad, flag: "FZ_PORTAL_URL") } catch { #expect(error.field == "FZ_PORTAL_URL") }
        }
    }

    @Test("tokens: --token-file, then FZ_TOKEN, then $CREDENTIALS_DIRECTORY; missing, empty or unreadable files name the flag")
    func tokens() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fz-token-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("token").path
        try "fz_from_file\n".write(toFile: file, atomically: true, encoding: .utf8)
        let creds = dir.appendingPathComponent("fz-token").path
        try "fz_from_credential".write(toFile: creds, atomically: true, encoding: .utf8)

        #expect(try PortalToken.resolve(tokenFile: file, environment: ["FZ_TOKEN": "fz_env"]) == "fz_from_file")
        #expect(try PortalToken.resolve(tokenFile: nil, environment: ["FZ_TOKEN": "fz_env", "CREDENTIALS_DIRECTORY": dir.path]) == "fz_env")
        #expect(try PortalToken.resolve(tokenFile: nil, environment: ["CREDENTIALS_DIRECTORY": dir.path]) == "fz_from_credential")

        func field(_ tokenFile: String?, _ env: [String: String]) -> String? {
            do { _ = try PortalToken.resolve(tokenFile: tokenFile, environment: env); return nil } catch { return error.field }
        }
        #expect(field(dir.appendingPathComponent("missing").path, [:]) == "--token-file")
        let empty = dir.appendingPathComponent("empty").path
        try "  \n".write(toFile: empty, atomically: true, encoding: .utf8)
        #expect(field(empty, [:]) == "--token-file")
        #expect(field(dir.path, [:]) == "--token-file")  // a directory cannot be read as a file
        #expect(field(nil, ["FZ_TOKEN": ""]) == "FZ_TOKEN")
        #expect(field(nil, [:]) == "--token-file")
        if getuid() != 0 {  // root reads any file
            let locked = dir.appendingPathComponent("locked").path
            try "fz_x".write(toFile: locked, atomically: true, encoding: .utf8)
            chmod(locked, 0)
            #expect(field(locked, [:]) == "--token-file")
        }
    }

    @Test("backoff doubles from the initial wait up to the cap, jittered within [d/2, d], and resets")
    func backoff() {
        var b = Backoff(initial: .milliseconds(100), cap: .seconds(1))
        #expect(b.next(unit: 1) == .milliseconds(100))
        #expect(b.next(unit: 1) == .milliseconds(200))
        #expect(b.next(unit: 0) == .milliseconds(200))  // 400 ms at the low end of the jitter
        #expect(b.next(unit: 1) == .milliseconds(800))
        #expect(b.next(unit: 1) == .seconds(1))
        for _ in 0..<100 { #expect(b.next() <= .seconds(1)) }
        b.reset()
        #expect(b.next(unit: 1) == .milliseconds(100))
    }
}
