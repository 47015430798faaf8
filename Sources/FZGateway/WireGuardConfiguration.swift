import FZCore
import FZLinux
import WireGuard

/// A wg-quick(8) configuration file: `[Interface]` and `[Peer]` sections of `Key = Value` lines.
///
/// Supported: Interface `PrivateKey`, `ListenPort`, `Address`, `MTU`; Peer `PublicKey`,
/// `PresharedKey`, `AllowedIPs`, `Endpoint` (numeric address only), `PersistentKeepalive`. Keys are
/// case-insensitive, lists are comma-separated and may repeat, `#` starts a comment. wg-quick's
/// shell hooks and `DNS`, `Table`, `SaveConfig`, `FwMark` are accepted and ignored with a warning;
/// any other key is an error naming its line.
public struct WireGuardConfiguration: Sendable {
    public struct Interface: Sendable {
        public var privateKey: PrivateKey
        public var listenPort: UInt16?
        public var addresses: [InterfaceAddress]
        public var mtu: Int?
    }

    public struct PeerEntry: Sendable {
        public var publicKey: PublicKey
        public var presharedKey: PresharedKey?
        public var allowedIPs: [CIDR]
        public var endpoint: SocketAddress?
        /// Seconds; nil when off.
        public var persistentKeepalive: Int?
        /// The line of the `[Peer]` header, for messages.
        public var line: Int
    }

    public var interface: Interface
    public var peers: [PeerEntry]
    /// Lines that were accepted but have no effect here.
    public var warnings: [String]

    public static let defaultMTU = 1420

    public static func parse(_ text: String) throws(WireGuardConfigurationError) -> WireGuardConfiguration {
        var parser = Parser()
        return try parser.parse(text)
    }
}

/// Why a configuration was rejected: the line (1-based; 0 for the file as a whole), the key if
/// one was involved, and what is wrong.
public struct WireGuardConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    public var line: Int
    public var key: String?
    public var message: String

    public init(line: Int, key: String?, message: String) {
        self.line = line
        self.key = key
        self.message = message
    }

    public var description: String {
        let place = line > 0 ? "line \(line)" : "configuration"
        if let key { return "\(place): \(key): \(message)" }
        return "\(place): \(message)"
    }
}

private struct Parser {
    enum Section { case none, interface, peer }

    struct PartialPeer {
        var line: Int
        var publicKey: PublicKey?
        var presharedKey: PresharedKey?
        var allowedIPs: [CIDR] = []
        var endpoint: SocketAddress?
        var persistentKeepalive: Int?
    }

    var section = Section.none
    var interfaceLine = 0
    var privateKey: PrivateKey?
    var listenPort: UInt16?
    var addresses: [InterfaceAddress] = []
    var mtu: Int?
    var peers: [PartialPeer] = []
    var warnings: [String] = []

    static let ignoredInterfaceKeys: Set<String> = [
        "dns", "table", "preup", "postup", "predown", "postdown", "saveconfig", "fwmark",
    ]

    mutating func parse(_ text: String) throws(WireGuardConfigurationError) -> WireGuardConfiguration {
        var lineNumber = 0
        // "\r\n" is one Character in Swift: split on it too.
        let lines = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }
        for rawLine in lines {
            lineNumber += 1
            var line = Substring(rawLine)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let trimmed = line.trimmed
            if trimmed.isEmpty { continue }
            if trimmed.hasPrefix("[") {
                try beginSection(trimmed, line: lineNumber)
                continue
            }
            guard let eq = trimmed.firstIndex(of: "=") else {
                throw WireGuardConfigurationError(line: lineNumber, key: nil, message: "expected 'Key = Value'")
            }
            let key = String(trimmed[..<eq].trimmed)
            let value = String(trimmed[trimmed.index(after: eq)...].trimmed)
            guard !key.isEmpty else {
                throw WireGuardConfigurationError(line: lineNumber, key: nil, message: "missing key before '='")
            }
            try handle(key: key, value: value, line: lineNumber)
        }
        return try finish()
    }

    mutating func beginSection(_ header: Substring, line: Int) throws(WireGuardConfigurationError) {
        switch header.lowercased() {
        case "[interface]":
            guard interfaceLine == 0 else {
                throw WireGuardConfigurationError(line: line, key: nil,
                                                  message: "second [Interface] section (first at line \(interfaceLine))")
            }
            interfaceLine = line
            section = .interface
        case "[peer]":
            peers.append(PartialPeer(line: line))
            section = .peer
        default:
            throw WireGuardConfigurationError(line: line, key: nil, message: "unknown section \(header)")
        }
    }

    mutating func handle(key: String, value: String, line: Int) throws(WireGuardConfigurationError) {
        func fail(_ message: String) -> WireGuardConfigurationError {
            WireGuardConfigurationError(line: line, key: key, message: message)
        }
        let lower = key.lowercased()
        switch section {
        case .none:
            throw fail("key outside of any [Interface] or [Peer] section")
        case .interface:
            switch lower {
            case "privatekey":
                guard privateKey == nil else { throw fail("given twice") }
                guard let k = PrivateKey(base64: value) else { throw fail("not a base64 32-byte key") }
                privateKey = k
            case "listenport":
                guard let p = UInt16(value) else { throw fail("'\(value)' is not a port number (0-65535)") }
                listenPort = p
            case "address":
                for item in try list(value, fail) {
                    guard let a = InterfaceAddress(item) else { throw fail("'\(item)' is not an address/prefix") }
                    addresses.append(a)
                }
            case "mtu":
                guard let m = Int(value), (576...9000).contains(m) else { throw fail("'\(value)' is not an MTU in 576...9000") }
                mtu = m
            default:
                guard Self.ignoredInterfaceKeys.contains(lower) else { throw fail("unknown key in [Interface]") }
                warnings.append("line \(line): \(key) is not supported by fz-gateway and is ignored")
            }
        case .peer:
            let i = peers.count - 1
            switch lower {
            case "publickey":
                guard peers[i].publicKey == nil else { throw fail("given twice") }
                guard let k = PublicKey(base64: value) else { throw fail("not a base64 32-byte key") }
                peers[i].publicKey = k
            case "presharedkey":
                guard let k = PresharedKey(base64: value) else { throw fail("not a base64 32-byte key") }
                peers[i].presharedKey = k
            case "allowedips":
                for item in try list(value, fail) {
                    guard let c = CIDR(item) else { throw fail("'\(item)' is not an address/prefix") }
                    peers[i].allowedIPs.append(c)
                }
            case "endpoint":
                guard let e = SocketAddress(value) else {
                    throw fail("'\(value)' is not a numeric IP:port or [IPv6]:port (host names are not resolved)")
                }
                peers[i].endpoint = e
            case "persistentkeepalive":
                if value.lowercased() == "off" {
                    peers[i].persistentKeepalive = nil
                } else {
                    guard let s = Int(value), (0...65535).contains(s) else { throw fail("'\(value)' is not 'off' or seconds (0-65535)") }
                    peers[i].persistentKeepalive = s == 0 ? nil : s
                }
            default:
                throw fail("unknown key in [Peer]")
            }
        }
    }

    func list(_ value: String, _ fail: (String) -> WireGuardConfigurationError) throws(WireGuardConfigurationError) -> [String] {
        let items = value.split(separator: ",", omittingEmptySubsequences: false).map { String($0.trimmed) }
        if items.contains(where: \.isEmpty) { throw fail("empty item in a comma-separated list") }
        return items
    }

    mutating func finish() throws(WireGuardConfigurationError) -> WireGuardConfiguration {
        guard interfaceLine > 0 else {
            throw WireGuardConfigurationError(line: 0, key: nil, message: "no [Interface] section")
        }
        guard let privateKey else {
            throw WireGuardConfigurationError(line: interfaceLine, key: "PrivateKey", message: "missing in [Interface]")
        }
        var result: [WireGuardConfiguration.PeerEntry] = []
        var seen: [PublicKey: Int] = [:]
        for peer in peers {
            guard let key = peer.publicKey else {
                throw WireGuardConfigurationError(line: peer.line, key: "PublicKey", message: "missing in [Peer]")
            }
            if let first = seen[key] {
                throw WireGuardConfigurationError(line: peer.line, key: "PublicKey",
                                                  message: "the same peer is configured at line \(first)")
            }
            if key == privateKey.publicKey {
                throw WireGuardConfigurationError(line: peer.line, key: "PublicKey", message: "is this interface's own key")
            }
            seen[key] = peer.line
            result.append(.init(publicKey: key, presharedKey: peer.presharedKey, allowedIPs: peer.allowedIPs,
                                endpoint: peer.endpoint, persistentKeepalive: peer.persistentKeepalive, line: peer.line))
        }
        return WireGuardConfiguration(
            interface: .init(privateKey: privateKey, listenPort: listenPort, addresses: addresses, mtu: mtu),
            peers: result, warnings: warnings)
    }
}

extension Substring {
    fileprivate var trimmed: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return s
    }
}
