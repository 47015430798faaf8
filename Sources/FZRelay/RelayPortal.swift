import ArgumentParser
import FZControl
import FZControlClient
import FZCore
import FZLinux
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TURN

/// Flags of the relay's portal mode: with a portal URL the relay joins the deployment (it is
/// listed to clients and gateways, and checks their TURN REST credentials with the deployment's
/// secret from `init`); without one nothing changes.
struct RelayPortalOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Join this fz-portal (http(s):// or ws(s)://; default $FZ_PORTAL_URL).", valueName: "url"))
    var portalUrl: String?

    @Option(help: ArgumentHelp(
        "File holding the relay-scope portal token (default: $FZ_TOKEN, then $CREDENTIALS_DIRECTORY/fz-token).", valueName: "path"))
    var tokenFile: String?

    @Option(help: "Region this relay serves, as the portal lists it (portal mode).")
    var region: String = "default"

    @Option(help: "Name the portal knows this relay by; stable across restarts (portal mode; default: the host name).")
    var name: String?
}

/// The validated portal mode: where, with which token, and what the relay announces.
struct RelayPortalSettings: Sendable {
    var url: PortalURL
    var token: String
    var name: String
    var region: String
    /// `IP:PORT` clients reach the relay at.
    var addresses: [String]

    /// Nil without a portal URL; otherwise every value checked, errors naming the flag.
    init?(options o: RelayPortalOptions, environment: [String: String], listeners: [SocketAddress], relayAddresses: [RelayAddress]) throws {
        let urlFlag = o.portalUrl != nil ? "--portal-url" : "FZ_PORTAL_URL"
        guard let text = o.portalUrl ?? environment["FZ_PORTAL_URL"] else { return nil }
        do {
            url = try PortalURL(text, flag: urlFlag)
            token = try PortalToken.resolve(tokenFile: o.tokenFile, environment: environment)
        } catch {
            throw ValidationError("\(error.field): \(error.reason)")
        }
        let hostName = ProcessInfo.processInfo.hostName
        name = (o.name ?? hostName).trimmingCharacters(in: .whitespaces)
        region = o.region.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, name.utf8.count <= 255 else { throw ValidationError("--name must be 1-255 bytes") }
        guard !region.isEmpty, region.utf8.count <= 255 else { throw ValidationError("--region must be 1-255 bytes") }
        // What clients reach: the public address behind a 1:1 NAT, else the listening address,
        // else (a wildcard listener) the relay addresses of the host.
        var ips: [IPAddress] = []
        for l in listeners {
            if l.ip.isUnspecified {
                ips += relayAddresses.filter { $0.bind.family == l.ip.family }.map(\.advertised)
            } else {
                ips.append(relayAddresses.first { $0.bind == l.ip }?.advertised ?? l.ip)
            }
        }
        var seen = Set<String>()
        addresses = ips.compactMap { ip in
            let a = listeners.first.map { SocketAddress(ip: ip, port: $0.port).description } ?? ip.description
            return seen.insert(a).inserted ? a : nil
        }
        guard !addresses.isEmpty else {
            throw ValidationError("--portal-url: no address to announce; set --external-ip or a non-wildcard --listening-ip")
        }
        guard addresses.count <= 16 else { throw ValidationError("--portal-url: at most 16 addresses can be announced") }
    }
}

/// The credentials the shards check with: what the flags and `--config` give (`base`), plus the
/// deployment's TURN secret once the portal sent it. SIGHUP replaces `base`, `init` the secret;
/// either way every shard gets the sum.
final class RelaySecrets: Sendable {
    private let state: Mutex<(base: RelaySettings.Reloadable, portal: String?)>

    init(base: RelaySettings.Reloadable) { state = Mutex((base, nil)) }

    /// The reloadable settings to apply now.
    var effective: RelaySettings.Reloadable {
        state.withLock { s in
            var r = s.base
            if let p = s.portal, !r.secrets.contains(p) { r.secrets.append(p) }
            return r
        }
    }

    func setBase(_ r: RelaySettings.Reloadable) { state.withLock { $0.base = r } }

    /// Sets the portal's secret; true when it changed.
    func setPortal(_ secret: String) -> Bool {
        state.withLock { s in
            guard s.portal != secret else { return false }
            s.portal = secret
            return true
        }
    }

    static func apply(_ r: RelaySettings.Reloadable, settings: RelaySettings, to shards: [LoopConfined<RelayShard>]) {
        for shard in shards {
            shard.value.loop.execute { shard.value.reload(settings, r) }
        }
    }
}

/// Portal mode: keeps the session to `/api/v1/ws/relay`, applies the TURN secret from each
/// `init`. Allocations are served from the shards whether or not the portal is reachable.
struct RelayPortalService: Service, CustomStringConvertible {
    var description: String { "RelayPortalService" }
    let portal: RelayPortalSettings
    let settings: RelaySettings
    let secrets: RelaySecrets
    let shards: [LoopConfined<RelayShard>]
    let logger: Logger

    func run() async throws {
        let session = PortalSession<ToRelay, FromRelay>(
            url: portal.url, path: "/api/v1/ws/relay",
            query: [("name", portal.name), ("region", portal.region), ("addresses", portal.addresses.joined(separator: ","))],
            token: portal.token, logger: logger)
        let secrets = self.secrets
        let settings = self.settings
        let shards = self.shards
        let logger = self.logger
        let portal = self.portal
        do {
            try await cancelWhenGracefulShutdown {
                try await session.run { event in
                    switch event {
                    case .connected:
                        logger.info("connected to the portal", metadata: ["portal": "\(portal.url)"])
                    case .message(.initialize(let i)):
                        if secrets.setPortal(i.turnSecret.value) {
                            RelaySecrets.apply(secrets.effective, settings: settings, to: shards)
                        }
                        logger.notice(
                            "joined the portal", metadata: ["relay_id": "\(i.relayId)", "region": "\(i.region)", "addresses": "\(i.addresses)"])
                    case .message(.error(let e)):
                        logger.warning("portal error", metadata: ["code": "\(e.code)", "message": "\(e.message)"])
                    case .message:
                        break
                    case .disconnected(let reason):
                        logger.warning("portal connection lost; still serving, reconnecting", metadata: ["reason": "\(reason)"])
                    }
                }
            }
        } catch let refused as SessionRefused {
            // A refused token will not become valid by retrying: say so loudly, keep relaying
            // for the credentials the relay already has.
            logger.error("the portal refused this relay; serving without it: \(refused)")
            try? await gracefulShutdown()
        }
    }
}
