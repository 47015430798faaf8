import ArgumentParser
import FZControl
import FZControlClient
import FZDaemon
import FZLinux
import Foundation
import Logging

/// `fz-client run`: the client daemon.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the client: a TUN device, routes to the resources, tunnels on demand.",
        discussion: """
            Joins the portal (FZ_PORTAL_URL or --portal-url) with a client token (FZ_TOKEN, \
            --token-file, or $CREDENTIALS_DIRECTORY/fz-token). The WireGuard key is made at the first \
            start and kept in --state-dir, so the client keeps its identity and tunnel addresses. \
            Creates --interface with the tunnel addresses the portal assigns and a route per CIDR or IP \
            resource; the first packet to a resource asks the portal for access, is held until the \
            tunnel is up (ICE: direct when possible, else through a relay) and then sent. A denied \
            resource answers at once (TCP RST, ICMP unreachable). Notifies systemd (READY=1) once \
            joined; SIGTERM or SIGINT removes the interface. `fz-client status` shows what it does. \
            Needs CAP_NET_ADMIN.
            """)

    @Option(help: ArgumentHelp("The fz-portal to join (http(s):// or ws(s)://; default $FZ_PORTAL_URL).", valueName: "url"))
    var portalUrl: String?

    @Option(help: ArgumentHelp("File holding the client token (default: $FZ_TOKEN, then $CREDENTIALS_DIRECTORY/fz-token).", valueName: "path"))
    var tokenFile: String?

    @Option(help: ArgumentHelp("Directory for the client's key and status socket (created 0700).", valueName: "path"))
    var stateDir: String = "/var/lib/fz-client"

    @Option(help: ArgumentHelp("Name of the TUN interface to create (at most 15 bytes).", valueName: "name"))
    var interface: String = "fz0"

    @Option(help: "MTU of the TUN interface.")
    var mtu: Int = 1280

    @Option(help: "The name the portal shows for this client (default: the host name).")
    var name: String?

    @Flag(inversion: .prefixedNo, help: "TUN offloads (virtio header, UDP GSO/GRO); fall back by themselves where missing.")
    var offload: Bool = true

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Log format: text or json (one object per line).")
    var logFormat: String = "text"

    func validate() throws {
        _ = try settings()
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'") }
        guard LogFormat(rawValue: logFormat) != nil else { throw ValidationError("--log-format: '\(logFormat)' is not text or json") }
    }

    func run() throws {
        (LogFormat(rawValue: logFormat) ?? .text).bootstrap()
        var logger = Logger(label: "fz-client")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let s = try settings()
        do {
            try ClientDaemon.run(s, logger: logger)
        } catch {
            logger.critical("fz-client failed: \(error)")
            throw ExitCode.failure
        }
    }

    /// The settings from flags and environment; errors name the flag or variable.
    func settings(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ClientSettings {
        guard !interface.isEmpty, interface.utf8.count <= 15, !interface.contains("/"), !interface.contains(" ") else {
            throw ValidationError("--interface must be 1-15 bytes without '/' or spaces")
        }
        guard (1280...9000).contains(mtu) else { throw ValidationError("--mtu must be 1280-9000 (IPv6 needs 1280)") }
        guard !stateDir.isEmpty else { throw ValidationError("--state-dir must not be empty") }
        guard stateDir.utf8.count + 1 + StateDirectory.statusSocket.utf8.count < 108 else {
            throw ValidationError("--state-dir is too long for its status socket (at most \(106 - StateDirectory.statusSocket.utf8.count) bytes)")
        }
        guard let text = portalUrl ?? environment["FZ_PORTAL_URL"] else {
            throw ValidationError("--portal-url: no portal; set FZ_PORTAL_URL or pass --portal-url")
        }
        do {
            let url = try PortalURL(text, flag: portalUrl != nil ? "--portal-url" : "FZ_PORTAL_URL")
            let token = try PortalToken.resolve(tokenFile: tokenFile, environment: environment)
            let name = (name ?? ProcessInfo.processInfo.hostName).trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, name.utf8.count <= 255 else { throw ValidationError("--name must be 1-255 bytes") }
            return ClientSettings(url: url, token: token, name: name, stateDirectory: StateDirectory(stateDir), interfaceName: interface,
                                  mtu: mtu, offload: offload)
        } catch let error as FZControl.ValidationError {
            throw ValidationError("\(error.field): \(error.reason)")
        }
    }
}

/// `fz-client status`: what the running client does, from its status socket.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the running client's resources, gateways and paths.")

    @Option(help: ArgumentHelp("The running client's --state-dir.", valueName: "path"))
    var stateDir: String = "/var/lib/fz-client"

    @Flag(help: "Print the daemon's JSON report.")
    var json = false

    func run() throws {
        let path = StateDirectory(stateDir).statusSocketPath
        let bytes: [UInt8]
        do {
            bytes = try UnixStatusServer.request(path)
        } catch {
            throw StatusUnavailable(message: "fz-client is not running with --state-dir \(stateDir) (\(error))")
        }
        if json {
            print(String(decoding: bytes, as: UTF8.self), terminator: "")
            return
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        guard let report = try? decoder.decode(ClientStatusReport.self, from: Data(bytes)) else {
            throw StatusUnavailable(message: "the status socket at \(path) answered something that is not a status report")
        }
        print(Self.render(report), terminator: "")
    }

    static func render(_ r: ClientStatusReport) -> String {
        var out = "fz-client on \(r.interface): portal \(r.portal)"
        if let id = r.clientId { out += ", client \(id)" }
        if let v4 = r.ipv4, let v6 = r.ipv6 { out += ", tunnel \(v4) \(v6)" }
        out += "\n"
        if r.resources.isEmpty { out += "no resources\n" }
        for s in r.resources {
            out += "\(s.name) (\(s.address)): \(s.state)"
            if let g = s.gateway { out += " via \(g)" }
            if let p = s.path { out += ", \(p)" }
            if let rtt = s.rttMs { out += String(format: ", rtt %.1f ms", rtt) }
            if let reason = s.reason { out += " (\(reason))" }
            out += "\n"
        }
        return out
    }
}

struct StatusUnavailable: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
