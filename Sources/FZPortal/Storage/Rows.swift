import FZControl
import FZCore
import Foundation
import GRDB
import Portal

/// Row ↔ domain value conversion for `SQLiteStore`. Stored values were validated on the way in;
/// a row that no longer parses (edited by hand) is reported, never crashed on.
enum Rows {
    struct Corrupt: Error, CustomStringConvertible {
        var table: String
        var column: String
        var description: String { "corrupt value in \(table).\(column)" }
    }

    static func actor(_ r: Row) throws -> PortalActor {
        guard let kind = PortalActor.Kind(rawValue: r["kind"]) else { throw Corrupt(table: "actors", column: "kind") }
        return PortalActor(id: ActorID(r["id"]), name: r["name"], kind: kind)
    }

    static func resource(_ r: Row) throws -> Resource {
        let filterText: String = r["filters"]
        return Resource(
            id: ResourceID(r["id"]), siteId: SiteID(r["site_id"]), name: r["name"],
            address: try ResourceAddress(parsing: r["address"]),
            filters: try filterText.split(separator: ",").map { try TrafficFilter(parsing: String($0)) })
    }

    static func filters(_ f: [TrafficFilter]) -> String { f.map(\.description).joined(separator: ",") }

    static func policy(_ r: Row) throws -> Policy {
        let json: String = r["conditions"]
        return Policy(
            id: PolicyID(r["id"]), groupId: GroupID(r["group_id"]), resourceId: ResourceID(r["resource_id"]),
            conditions: try JSONDecoder().decode(PolicyConditions.self, from: Data(json.utf8)))
    }

    static func conditions(_ c: PolicyConditions) throws -> String {
        String(decoding: try JSONEncoder().encode(c), as: UTF8.self)
    }

    static func policies(_ db: Database, where condition: String, _ args: StatementArguments) throws -> [Policy] {
        try Row.fetchAll(db, sql: "SELECT * FROM policies WHERE \(condition) ORDER BY id", arguments: args).map(policy)
    }

    static func gateway(_ r: Row) throws -> Gateway {
        Gateway(id: GatewayID(r["id"]), siteId: SiteID(r["site_id"]), name: r["name"], publicKey: try WireGuardKey(base64: r["public_key"]))
    }

    static func relay(_ r: Row) -> Relay {
        let addresses: String = r["addresses"]
        return Relay(id: RelayID(r["id"]), name: r["name"], region: r["region"], addresses: addresses.split(separator: ",").map(String.init))
    }

    static func client(_ r: Row) throws -> Client {
        guard let v4 = IPv4Address(r["ipv4"] as String) else { throw Corrupt(table: "clients", column: "ipv4") }
        guard let v6 = IPv6Address(r["ipv6"] as String) else { throw Corrupt(table: "clients", column: "ipv6") }
        return Client(
            id: ClientID(r["id"]), actorId: ActorID(r["actor_id"]), name: r["name"], publicKey: try WireGuardKey(base64: r["public_key"]),
            ipv4: v4, ipv6: v6)
    }

    static func token(_ r: Row) throws -> Token {
        guard let scope = TokenScope(rawValue: r["scope"]) else { throw Corrupt(table: "tokens", column: "scope") }
        let hash: Data = r["hash"]
        return Token(
            id: TokenID(r["id"]), name: r["name"], scope: scope, subject: r["subject"], hash: Array(hash),
            createdAt: UnixTime(seconds: r["created_at"]), expiresAt: (r["expires_at"] as Int64?).map(UnixTime.init),
            revokedAt: (r["revoked_at"] as Int64?).map(UnixTime.init))
    }
}
