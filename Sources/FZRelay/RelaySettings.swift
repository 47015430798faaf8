import ArgumentParser
import FZCore
import FZDaemon
import FZLinux
import Foundation
import Logging
import TURN

#if canImport(Glibc)
import Glibc
#endif

/// The relay's validated configuration. Built from flags (and environment), and in part rebuilt
/// from `--config` on SIGHUP.
struct RelaySettings: Sendable {


    var listeners: [SocketAddress]
    var relayAddresses: [RelayAddress]
    var portRange: ClosedRange<UInt16>
    var realm: String
    var logLevel: Logger.Level
    var logFormat: LogFormat
    var metricsListen: SocketAddress?
    var configFile: String?
    /// What SIGHUP can change.
    var reloadable: Reloadable
    /// Portal mode (`--portal-url` / `FZ_PORTAL_URL`), or nil: a standalone relay.
    var portal: RelayPortalSettings?
    /// The reloadable part from flags and environment alone; SIGHUP re-reads the file on top.
    var commandLineReloadable: Reloadable
    var unauthRate: Double
    /// Event-loop threads (shards).
    var threads: Int
    /// TURN over TCP on the listening addresses (RFC 8656 §3.1).
    var tcp: Bool
    var streamLimits: StreamLimits

    /// Users, secrets, quotas and peer rules: the part of the configuration a reload replaces.
    struct Reloadable: Sendable, Equatable {
        var users: [String: String] = [:]
        var secrets: [String] = []
        var userQuota = 0
        var totalQuota = 0
        var maxPermissions = 128
        var allowPeer: [CIDR] = []
        var denyPeer: [CIDR] = []
        var allowLoopback = false
    }

    init(command c: RelayCommand) throws {
        guard (1...65535).contains(c.listeningPort) else {
            throw ValidationError("--listening-port must be 1-65535, got \(c.listeningPort)")
        }
        let listenIPs = try (c.listeningIp.isEmpty ? ["0.0.0.0"] : c.listeningIp).map { text in
            guard let ip = IPAddress(text) else { throw ValidationError("--listening-ip: '\(text)' is not an IP address") }
            return ip
        }
        listeners = listenIPs.map { SocketAddress(ip: $0, port: UInt16(c.listeningPort)) }

        var relayIPs = try c.relayIp.map { text in
            guard let ip = IPAddress(text), !ip.isUnspecified else {
                throw ValidationError("--relay-ip: '\(text)' is not a specific IP address")
            }
            return ip
        }
        if relayIPs.isEmpty {
            relayIPs = listenIPs.filter { !$0.isUnspecified }
            if relayIPs.isEmpty {
                throw ValidationError("--relay-ip is required when --listening-ip is a wildcard address")
            }
        }
        var external: [IPAddress: IPAddress] = [:]
        for text in c.externalIp {
            let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
            guard let pub = IPAddress(parts[0]), !pub.isUnspecified else {
                throw ValidationError("--external-ip: '\(text)' is not PUBLIC or PUBLIC/PRIVATE")
            }
            if parts.count == 2 {
                guard let priv = IPAddress(parts[1]), priv.family == pub.family else {
                    throw ValidationError("--external-ip: '\(text)' needs a private address of the same family")
                }
                external[priv] = pub
            } else {
                guard let priv = relayIPs.first(where: { $0.family == pub.family }) else {
                    throw ValidationError("--external-ip: no --relay-ip of the same family as '\(text)'")
                }
                external[priv] = pub
            }
        }
        relayAddresses = relayIPs.map { RelayAddress(bind: $0, advertised: external[$0]) }

        guard (1...65535).contains(c.minPort) else { throw ValidationError("--min-port must be 1-65535, got \(c.minPort)") }
        guard (1...65535).contains(c.maxPort) else { throw ValidationError("--max-port must be 1-65535, got \(c.maxPort)") }
        guard c.minPort <= c.maxPort else {
            throw ValidationError("--min-port (\(c.minPort)) must not exceed --max-port (\(c.maxPort))")
        }
        portRange = UInt16(c.minPort)...UInt16(c.maxPort)

        guard !c.realm.isEmpty, c.realm.utf8.count < 763 else { throw ValidationError("--realm must be 1-762 bytes") }
        realm = c.realm
        guard let level = Logger.Level(rawValue: c.logLevel) else {
            throw ValidationError("--log-level: '\(c.logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        logLevel = level
        guard let format = LogFormat(rawValue: c.logFormat) else {
            throw ValidationError("--log-format: '\(c.logFormat)' is not text or json")
        }
        logFormat = format
        if let m = c.metricsListen {
            guard let a = SocketAddress(m) else { throw ValidationError("--metrics-listen: '\(m)' is not ADDR:PORT") }
            metricsListen = a
        }
        if let t = c.threads {
            guard (1...256).contains(t) else { throw ValidationError("--threads must be 1-256, got \(t)") }
            threads = t
        } else {
            threads = SystemInfo.onlineProcessors
        }
        guard portRange.count / threads >= 2 else {
            throw ValidationError("--min-port/--max-port: \(portRange.count) ports cannot be split over \(threads) threads (--threads)")
        }
        tcp = !c.noTcp
        streamLimits = StreamLimits()
        guard c.maxTcpConnections >= 0 else { throw ValidationError("--max-tcp-connections must not be negative") }
        guard c.maxTcpConnectionsPerIp >= 0 else { throw ValidationError("--max-tcp-connections-per-ip must not be negative") }
        streamLimits.maxConnections = c.maxTcpConnections
        streamLimits.maxConnectionsPerIP = c.maxTcpConnectionsPerIp
        guard c.unauthRate >= 0 else { throw ValidationError("--unauth-rate must not be negative") }
        unauthRate = c.unauthRate

        var r = Reloadable()
        try r.apply(option: "user-quota", values: [String(c.userQuota)])
        try r.apply(option: "total-quota", values: [String(c.totalQuota)])
        try r.apply(option: "max-permissions", values: [String(c.maxPermissions)])
        try r.apply(option: "user", values: c.user)
        try r.apply(option: "static-auth-secret", values: c.staticAuthSecret)
        if let path = c.staticAuthSecretFile {
            guard let text = readTextFile(path) else {
                throw ValidationError("--static-auth-secret-file: cannot read '\(path)'")
            }
            let secrets = text.split(whereSeparator: \.isNewline).map { $0.trimmingSpaces }.filter { !$0.isEmpty }
            guard !secrets.isEmpty else { throw ValidationError("--static-auth-secret-file: '\(path)' holds no secret") }
            r.secrets += secrets
        }
        try r.apply(option: "allow-peer", values: c.allowPeer)
        try r.apply(option: "deny-peer", values: c.denyPeer)
        r.allowLoopback = c.allowLoopbackPeers
        configFile = c.config
        commandLineReloadable = r
        if let path = c.config {
            r = try Self.merge(base: r, file: path)
        }
        reloadable = r
        portal = try RelayPortalSettings(
            options: c.portal, environment: ProcessInfo.processInfo.environment, listeners: listeners, relayAddresses: relayAddresses)
    }

    /// The command-line settings with the file's reloadable options added: files add users,
    /// secrets and peer rules, and replace quotas.
    static func merge(base: Reloadable, file path: String) throws -> Reloadable {
        guard let text = readTextFile(path) else { throw ValidationError("--config: cannot read '\(path)'") }
        var r = base
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingSpaces
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingSpaces }
            let key = parts[0].hasPrefix("--") ? String(parts[0].dropFirst(2)) : parts[0]
            if key == "allow-loopback-peers" {
                guard parts.count == 1 || ["true", "yes", "on", "1", "false", "no", "off", "0"].contains(parts[1].lowercased())
                else {
                    throw ValidationError("--config: \(path):\(n + 1): allow-loopback-peers takes true or false")
                }
                r.allowLoopback = parts.count == 1 || ["true", "yes", "on", "1"].contains(parts[1].lowercased())
                continue
            }
            guard parts.count == 2 else {
                throw ValidationError("--config: \(path):\(n + 1): expected `option = value`")
            }
            do {
                try r.apply(option: key, values: [parts[1]])
            } catch let e as ValidationError {
                throw ValidationError("--config: \(path):\(n + 1): \(e.message)")
            }
        }
        return r
    }

    var serverConfig: ServerConfig {
        var c = ServerConfig(realm: realm, relayAddresses: relayAddresses)
        c.portRange = portRange
        c.userQuota = reloadable.userQuota
        c.totalQuota = reloadable.totalQuota
        c.maxPermissionsPerAllocation = reloadable.maxPermissions
        c.unauthenticatedPerSecond = unauthRate
        c.unauthenticatedBurst = unauthRate == 0 ? 0 : max(1, unauthRate * 2)
        return c
    }

    /// The part of the relay port range shard `i` allocates from: contiguous, so EVEN-PORT
    /// pairs stay within one shard, and disjoint, so shards never race for a port.
    func portSlice(_ i: Int) -> ClosedRange<UInt16> {
        let lo = Int(portRange.lowerBound)
        let size = portRange.count / threads
        let start = lo + i * size
        let end = i == threads - 1 ? Int(portRange.upperBound) : start + size - 1
        return UInt16(start)...UInt16(end)
    }

    func credentials(_ r: Reloadable) -> CredentialStore {
        CredentialStore(realm: realm, users: r.users, secrets: r.secrets)
    }

    func peerPolicy(_ r: Reloadable) -> PeerPolicy {
        var ownTransports = Set(listeners)
        for l in listeners where l.ip.isUnspecified {
            for ra in relayAddresses { ownTransports.insert(SocketAddress(ip: ra.bind, port: l.port)) }
        }
        // The relay's own addresses are denied by default like the internal ranges.
        let own = relayAddresses.flatMap { [$0.bind, $0.advertised] }.compactMap { CIDR(address: $0, prefixLength: $0.family == .v4 ? 32 : 128) }
        return PeerPolicy(
            allow: r.allowPeer + (r.allowLoopback ? PeerPolicy.loopback : []),
            deny: r.denyPeer,
            defaultDeny: PeerPolicy.defaultDenyList + own,
            forbiddenTransports: ownTransports)
    }
}

extension RelaySettings.Reloadable {
    /// Applies one option by its long name; errors name the option.
    mutating func apply(option: String, values: [String]) throws {
        switch option {
        case "user":
            for v in values {
                guard let colon = v.firstIndex(of: ":"), colon != v.startIndex, v.index(after: colon) != v.endIndex else {
                    throw ValidationError("--user: expected NAME:PASSWORD")
                }
                users[String(v[..<colon])] = String(v[v.index(after: colon)...])
            }
        case "static-auth-secret":
            for v in values {
                guard !v.isEmpty else { throw ValidationError("--static-auth-secret must not be empty") }
                secrets.append(v)
            }
        case "allow-peer", "deny-peer":
            for v in values {
                guard let cidr = CIDR(v) else { throw ValidationError("--\(option): '\(v)' is not a CIDR range") }
                if option == "allow-peer" { allowPeer.append(cidr) } else { denyPeer.append(cidr) }
            }
        case "user-quota", "total-quota", "max-permissions":
            guard let v = values.last, let n = Int(v), n >= 0 else {
                throw ValidationError("--\(option) must be a non-negative integer")
            }
            switch option {
            case "user-quota": userQuota = n
            case "total-quota": totalQuota = n
            default: maxPermissions = n
            }
        default:
            throw ValidationError("unknown option '\(option)' (reloadable: user, static-auth-secret, allow-peer, deny-peer, user-quota, total-quota, max-permissions, allow-loopback-peers)")
        }
    }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " || $0 == "\t" || $0 == "\r" }).reversed().drop(while: { $0 == " " || $0 == "\t" || $0 == "\r" }).reversed())
    }
}

extension String {
    var trimmingSpaces: String { self[...].trimmingSpaces }
}

/// Reads a small text file (configuration, secrets); nil when it cannot be read.
func readTextFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n > 0 { bytes.append(contentsOf: buf[0..<n]) }
        if n < buf.count { break }
        if bytes.count > 1 << 20 { return nil }
    }
    if ferror(f) != 0 { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

// Secrets never reach a log: settings describe themselves with passwords and REST secrets
// redacted (ServiceLifecycle logs its services' descriptions at debug level).
extension RelaySettings: CustomStringConvertible, CustomDebugStringConvertible {
    var description: String {
        "RelaySettings(listeners: \(listeners), relay: \(relayAddresses.map(\.bind)), ports: \(portRange), realm: \(realm), threads: \(threads), tcp: \(tcp), \(reloadable))"
    }
    var debugDescription: String { description }
}

extension RelaySettings.Reloadable: CustomStringConvertible, CustomDebugStringConvertible {
    var description: String {
        "users: \(users.keys.sorted()) (passwords redacted), secrets: \(secrets.count) (redacted), user-quota: \(userQuota), total-quota: \(totalQuota), allow-peer: \(allowPeer), deny-peer: \(denyPeer), allow-loopback: \(allowLoopback)"
    }
    var debugDescription: String { description }
}
