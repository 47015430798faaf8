import ArgumentParser
import FZCore
import Testing
import TURN

@testable import FZRelay

@Suite("fz-relay flags and environment")
struct SettingsTests {
    func settings(_ args: [String]) throws -> RelaySettings {
        try RelayCommand.parse(args).settings()
    }

    func error(_ args: [String]) -> String {
        do {
            _ = try settings(args)
            return ""
        } catch {
            return RelayCommand.message(for: error)
        }
    }

    @Test("defaults follow coturn: port 3478, relay ports 49152-65535, deny-list on")
    func defaults() throws {
        let s = try settings(["--listening-ip", "127.0.0.1"])
        #expect(s.listeners == [SocketAddress("127.0.0.1:3478")!])
        #expect(s.relayAddresses == [RelayAddress(bind: IPAddress("127.0.0.1")!)])
        #expect(s.portRange == 49152...65535)
        #expect(!s.peerPolicy(s.reloadable).permits(IPAddress("127.0.0.1")!))
        #expect(!s.peerPolicy(s.reloadable).permits(IPAddress("10.0.0.1")!))
    }

    @Test("bad values exit with a message naming the flag", arguments: [
        (["--listening-port", "70000"], "--listening-port"),
        (["--listening-ip", "localhost"], "--listening-ip"),
        (["--min-port", "60000", "--max-port", "50000"], "--min-port"),
        (["--allow-peer", "notacidr"], "--allow-peer"),
        (["--deny-peer", "10.0.0.0/40"], "--deny-peer"),
        (["--user", "nopassword"], "--user"),
        (["--log-format", "xml"], "--log-format"),
        (["--log-level", "loud"], "--log-level"),
        (["--external-ip", "::1"], "--external-ip"),
        (["--metrics-listen", "9100"], "--metrics-listen"),
        (["--static-auth-secret-file", "/nonexistent/secret"], "--static-auth-secret-file"),
    ])
    func badFlags(_ args: [String], _ flag: String) {
        let message = error(["--listening-ip", "127.0.0.1"] + args)
        #expect(message.contains(flag), "\(args) gave: \(message)")
    }

    @Test("a wildcard listening address needs --relay-ip")
    func wildcardNeedsRelayIP() {
        #expect(error(["--listening-ip", "0.0.0.0"]).contains("--relay-ip"))
        #expect(error([]).contains("--relay-ip"))
        #expect(error(["--listening-ip", "0.0.0.0", "--relay-ip", "127.0.0.1"]) == "")
    }

    @Test("environment variables fill in flags the command line did not set")
    func environment() throws {
        let args = EnvironmentDefaults.merge(
            arguments: ["--listening-port", "4000"],
            environment: [
                "FZ_RELAY_LISTENING_PORT": "5000", "FZ_RELAY_LISTENING_IP": "127.0.0.1,::1",
                "FZ_RELAY_USER": "a:1,b:2", "FZ_RELAY_ALLOW_LOOPBACK_PEERS": "true", "UNRELATED": "x",
            ])
        let s = try settings(args)
        #expect(s.listeners.map(\.port) == [4000, 4000], "the command line wins")
        #expect(s.listeners.map(\.ip) == [IPAddress("127.0.0.1")!, IPAddress("::1")!])
        #expect(s.reloadable.users == ["a": "1", "b": "2"])
        #expect(s.reloadable.allowLoopback)
        #expect(EnvironmentDefaults.variable(for: "static-auth-secret") == "FZ_RELAY_STATIC_AUTH_SECRET")
    }

    @Test("settings never show passwords or REST secrets when printed")
    func redacted() throws {
        let s = try settings(["--listening-ip", "127.0.0.1", "--user", "alice:pa55word", "--static-auth-secret", "s3cr3t-value"])
        for text in ["\(s)", String(reflecting: s), "\(s.reloadable)", String(reflecting: s.reloadable)] {
            #expect(!text.contains("pa55word") && !text.contains("s3cr3t-value"), "\(text)")
            #expect(text.contains("alice"))
        }
    }

    @Test("--threads splits the relay port range into disjoint contiguous slices")
    func portSlices() throws {
        let s = try settings(["--listening-ip", "127.0.0.1", "--threads", "3", "--min-port", "50000", "--max-port", "50010"])
        #expect((0..<3).map { s.portSlice($0) } == [50000...50002, 50003...50005, 50006...50010])
        #expect(error(["--listening-ip", "127.0.0.1", "--threads", "0"]).contains("--threads"))
        #expect(error(["--listening-ip", "127.0.0.1", "--threads", "4", "--min-port", "50000", "--max-port", "50006"]).contains("--threads"))
    }

    @Test("--external-ip maps the relay address to the advertised public one")
    func externalIP() throws {
        let s = try settings(["--listening-ip", "10.0.0.5", "--external-ip", "198.51.100.7"])
        #expect(s.relayAddresses == [RelayAddress(bind: IPAddress("10.0.0.5")!, advertised: IPAddress("198.51.100.7")!)])
        #expect(!s.peerPolicy(s.reloadable).permits(IPAddress("198.51.100.7")!), "own public address is not a peer")
    }
}
