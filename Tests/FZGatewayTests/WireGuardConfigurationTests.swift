import FZCore
import FZLinux
import Testing
import WireGuard

@testable import FZGateway

@Suite struct WireGuardConfigurationTests {
    static let privateKey = PrivateKey.generate()
    static let peerKey = PrivateKey.generate().publicKey
    static let otherPeerKey = PrivateKey.generate().publicKey
    static let psk = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="

    static var goodFile: String {
        """
        # a wg-quick file as wg-quick(8) documents it
        [Interface]
        PrivateKey = \(privateKey.base64)
        ListenPort = 51820
        Address = 10.0.0.1/24, fd00::1/64   # both families
        Address = 10.0.1.1/32
        MTU = 1380
        DNS = 10.0.0.53

        [Peer]
        PublicKey = \(peerKey.base64)
        PresharedKey = \(psk)
        AllowedIPs = 10.0.0.2/32, 192.168.0.0/16
        AllowedIPs = fd00::2/128
        Endpoint = 198.51.100.7:51821
        PersistentKeepalive = 25

        [peer]
        publickey = \(otherPeerKey.base64)
        endpoint = [2001:db8::1]:443
        persistentkeepalive = off
        """
    }

    @Test func parses_every_supported_key_of_a_wg_quick_file() throws {
        let config = try WireGuardConfiguration.parse(Self.goodFile)
        #expect(config.interface.privateKey.publicKey == Self.privateKey.publicKey)
        #expect(config.interface.listenPort == 51820)
        #expect(config.interface.addresses.map(\.description) == ["10.0.0.1/24", "fd00::1/64", "10.0.1.1/32"])
        #expect(config.interface.mtu == 1380)
        #expect(config.peers.count == 2)
        let first = config.peers[0]
        #expect(first.publicKey == Self.peerKey)
        #expect(first.presharedKey != nil)
        #expect(first.allowedIPs.map(\.description) == ["10.0.0.2/32", "192.168.0.0/16", "fd00::2/128"])
        #expect(first.endpoint == SocketAddress("198.51.100.7:51821"))
        #expect(first.persistentKeepalive == 25)
        #expect(first.line == 10)
        let second = config.peers[1]
        #expect(second.endpoint == SocketAddress("[2001:db8::1]:443"))
        #expect(second.persistentKeepalive == nil)
        #expect(second.allowedIPs.isEmpty)
    }

    @Test func unsupported_wg_quick_keys_are_ignored_with_a_warning() throws {
        let config = try WireGuardConfiguration.parse(Self.goodFile)
        #expect(config.warnings.count == 1)
        #expect(config.warnings[0].contains("line 8") && config.warnings[0].contains("DNS"))
    }

    @Test func carriage_returns_and_blank_lines_are_accepted() throws {
        let text = "\r\n[Interface]\r\nPrivateKey = \(Self.privateKey.base64)\r\n\r\n"
        let config = try WireGuardConfiguration.parse(text)
        #expect(config.peers.isEmpty)
        #expect(config.interface.listenPort == nil)
    }

    static let badFiles: [(text: String, line: Int, key: String?, fragment: String)] = [
        ("PrivateKey = x", 1, "PrivateKey", "outside"),
        ("[Interface]\nPrivateKey = not-base64", 2, "PrivateKey", "base64"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\nListenPort = 70000", 3, "ListenPort", "port"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\nAddress = 10.0.0.1/33", 3, "Address", "10.0.0.1/33"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\nAddress = 10.0.0.1/24,", 3, "Address", "empty"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\nMTU = 100", 3, "MTU", "MTU"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\nColour = blue", 3, "Colour", "unknown key"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\njust words", 3, nil, "Key = Value"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\n[Wat]", 3, nil, "unknown section"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\n[Interface]", 3, nil, "second [Interface]"),
        ("[Interface]\nListenPort = 1", 1, "PrivateKey", "missing"),
        ("[Peer]\nPublicKey = \(peerKey.base64)", 0, nil, "no [Interface]"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\n[Peer]\nAllowedIPs = 10.0.0.0/8", 3, "PublicKey", "missing"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\n[Peer]\nPublicKey = \(peerKey.base64)\nAllowedIPs = 10.0.0.0/40",
         5, "AllowedIPs", "10.0.0.0/40"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\n[Peer]\nPublicKey = \(peerKey.base64)\nEndpoint = vpn.example.com:51820",
         5, "Endpoint", "host names"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\n[Peer]\nPublicKey = \(peerKey.base64)\nPersistentKeepalive = soon",
         5, "PersistentKeepalive", "seconds"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\n[Peer]\nPublicKey = \(peerKey.base64)\n[Peer]\nPublicKey = \(peerKey.base64)",
         5, "PublicKey", "line 3"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\n[Peer]\nPublicKey = \(privateKey.publicKey.base64)", 3, "PublicKey", "own key"),
        ("[Interface]\nPrivateKey = \(privateKey.base64)\n[Peer]\nPublicKey = \(peerKey.base64)\nEndpoint = 1.2.3.4",
         5, "Endpoint", "numeric"),
    ]

    @Test(arguments: badFiles.indices)
    func a_bad_file_is_rejected_naming_its_line_and_key(index: Int) {
        let bad = Self.badFiles[index]
        do {
            _ = try WireGuardConfiguration.parse(bad.text)
            Issue.record("accepted: \(bad.text)")
        } catch {
            #expect(error.line == bad.line, "\(error)")
            #expect(error.key == bad.key, "\(error)")
            #expect(error.description.contains(bad.fragment), "\(error)")
        }
    }
}
