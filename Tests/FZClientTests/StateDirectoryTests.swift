import FZLinux
import Foundation
import Testing
import WireGuard

@testable import FZClient

private func temporaryPath() -> String {
    let path = NSTemporaryDirectory() + "fzc-\(UUID().uuidString.prefix(8))"
    return path
}

private func mode(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1
}

@Suite("StateDirectory and the status socket")
struct StateDirectoryTests {
    @Test("the key is made once, 0600 in a 0700 directory, and read back the same at the next start")
    func keyPersists() throws {
        let root = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let dir = StateDirectory(root + "/nested/state")
        try dir.prepare()
        #expect(mode(dir.path) == 0o700)
        let first = try dir.loadOrCreateKey()
        #expect(mode(dir.keyPath) == 0o600)
        #expect(!FileManager.default.fileExists(atPath: dir.keyPath + ".tmp"))
        let second = try StateDirectory(dir.path).loadOrCreateKey()
        #expect(first.publicKey == second.publicKey)
    }

    @Test("a damaged key file or a directory others may write to is refused, naming --state-dir")
    func refusals() throws {
        let root = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let dir = StateDirectory(root)
        try dir.prepare()
        try "not a key\n".write(toFile: dir.keyPath, atomically: true, encoding: .utf8)
        #expect { try dir.loadOrCreateKey() } throws: { "\($0)".hasPrefix("--state-dir: ") && "\($0)".contains("private.key") }
        chmod(root, 0o777)
        #expect { try dir.prepare() } throws: { "\($0)".contains("writable by others") }
        let file = root + "/file"
        FileManager.default.createFile(atPath: file, contents: Data())
        #expect { try StateDirectory(file).prepare() } throws: { "\($0)".contains("not a directory") }
    }

    @Test("the status socket is 0600, answers each connection once and is gone after close")
    func statusSocket() throws {
        let root = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let dir = StateDirectory(root)
        try dir.prepare()
        let server = try UnixStatusServer(path: dir.statusSocketPath) { Array("{\"ok\":true}\n".utf8) }
        #expect(mode(dir.statusSocketPath) == 0o600)
        for _ in 0..<3 { #expect(try UnixStatusServer.request(dir.statusSocketPath) == Array("{\"ok\":true}\n".utf8)) }
        server.close()
        #expect(!FileManager.default.fileExists(atPath: dir.statusSocketPath))
        #expect(throws: SystemError.self) { try UnixStatusServer.request(dir.statusSocketPath) }
    }

    @Test("status renders one line per resource")
    func render() {
        let report = ClientStatusReport(
            interface: "fz0", clientId: "cli_1", portal: "connected", ipv4: "100.64.0.2", ipv6: "fd00::2",
            resources: [.init(id: "res_1", name: "web", address: "10.91.0.2/32", state: "connected", gateway: "gw_1",
                              path: "direct 198.18.0.3:51820", rttMs: 0.5),
                        .init(id: "res_2", name: "far", address: "10.92.0.2/32", state: "denied", reason: "offline")])
        #expect(StatusCommand.render(report) == """
            fz-client on fz0: portal connected, client cli_1, tunnel 100.64.0.2 fd00::2
            web (10.91.0.2/32): connected via gw_1, direct 198.18.0.3:51820, rtt 0.5 ms
            far (10.92.0.2/32): denied (offline)

            """)
    }
}
