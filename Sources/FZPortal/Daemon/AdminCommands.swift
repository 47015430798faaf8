import ArgumentParser
import Foundation

// `fz-portal site|resource|group|actor|membership|policy|token|gateway|relay|client …`: thin
// wrappers over the admin REST API (docs/api.md). Every command prints the server's JSON answer
// (pretty, sorted keys); errors print the server's message on stderr and exit 1.

/// A subcommand that sends one request and prints the answer.
protocol AdminSubcommand: AsyncParsableCommand {
    var connection: PortalConnection { get }
    func request(_ client: AdminClient) async throws -> Any?
}

extension AdminSubcommand {
    func run() async throws {
        let client = try connection.client()
        AdminClient.printJSON(try await request(client))
    }
}

extension PortalCommand {
    struct SiteCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "site", abstract: "Sites (where gateways run).", subcommands: [Create.self, List.self])

        struct Create: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "Create a site.")
            @OptionGroup var connection: PortalConnection
            @Argument(help: "The site's name.") var name: String
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("POST", "sites", body: ["name": name]) }
        }
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List sites.")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "sites") }
        }
    }

    struct ResourceCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resource", abstract: "Resources (CIDR, IP or DNS pattern at a site).", subcommands: [Create.self, List.self])

        struct Create: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "Create a resource.")
            @OptionGroup var connection: PortalConnection
            @Option(help: "The site id (site_…).") var site: String
            @Option(help: "CIDR range, IP address or DNS name pattern.") var address: String
            @Option(name: .customLong("filter"), help: "Traffic filter (tcp/443, udp/5000-5100, icmp); repeat for several. None = all traffic.")
            var filters: [String] = []
            @Argument(help: "The resource's name.") var name: String
            func request(_ c: AdminClient) async throws -> Any? {
                try await c.call("POST", "resources", body: ["name": name, "site_id": site, "address": address, "filters": filters])
            }
        }
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List resources.")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "resources") }
        }
    }

    struct GroupCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "group", abstract: "Groups of actors.", subcommands: [Create.self, List.self])

        struct Create: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "Create a group.")
            @OptionGroup var connection: PortalConnection
            @Argument(help: "The group's name.") var name: String
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("POST", "groups", body: ["name": name]) }
        }
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List groups.")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "groups") }
        }
    }

    struct ActorCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "actor", abstract: "Actors (users and service accounts).", subcommands: [Create.self, List.self])

        struct Create: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "Create an actor.")
            @OptionGroup var connection: PortalConnection
            @Option(help: "user or service_account.") var kind: String = "user"
            @Argument(help: "The actor's name.") var name: String
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("POST", "actors", body: ["name": name, "kind": kind]) }
        }
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List actors.")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "actors") }
        }
    }

    struct MembershipCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "membership", abstract: "Group memberships.", subcommands: [Add.self, List.self])

        struct Add: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "Add an actor to a group.")
            @OptionGroup var connection: PortalConnection
            @Option(help: "The group id (grp_…).") var group: String
            @Option(help: "The actor id (act_…).") var actor: String
            func request(_ c: AdminClient) async throws -> Any? {
                try await c.call("POST", "groups/\(group)/members", body: ["actor_id": actor])
            }
        }
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List memberships.")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "memberships") }
        }
    }

    struct PolicyCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "policy", abstract: "Policies (a group may reach a resource).", subcommands: [Create.self, List.self, Delete.self])

        struct Create: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "Create a policy.")
            @OptionGroup var connection: PortalConnection
            @Option(help: "The group id (grp_…).") var group: String
            @Option(help: "The resource id (res_…).") var resource: String
            @Option(name: .customLong("source-cidr"), help: "Allowed client source range; repeat for several.") var sourceCidrs: [String] = []
            @Option(help: "Time window days, comma-separated (mon,tue,…); UTC.") var days: String?
            @Option(help: "Time window start (HH:MM, UTC).") var start: String?
            @Option(help: "Time window end (HH:MM, UTC).") var end: String?
            func request(_ c: AdminClient) async throws -> Any? {
                var conditions: [String: Any] = [:]
                if !sourceCidrs.isEmpty { conditions["source_cidrs"] = sourceCidrs }
                if start != nil || end != nil || days != nil {
                    var w: [String: Any] = [:]
                    if let start { w["start"] = start }
                    if let end { w["end"] = end }
                    if let days { w["days"] = days.split(separator: ",").map(String.init) }
                    conditions["time_window"] = w
                }
                var body: [String: Any] = ["group_id": group, "resource_id": resource]
                if !conditions.isEmpty { body["conditions"] = conditions }
                return try await c.call("POST", "policies", body: body)
            }
        }
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List policies.")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "policies") }
        }
        struct Delete: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "Delete a policy (revokes what it granted).")
            @OptionGroup var connection: PortalConnection
            @Argument(help: "The policy id (pol_…).") var id: String
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("DELETE", "policies/\(id)") }
        }
    }

    struct TokenCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "token", abstract: "API and peer tokens.", subcommands: [Create.self, List.self, Revoke.self])

        struct Create: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "Create a token; prints its secret once.")
            @OptionGroup var connection: PortalConnection
            @Option(help: "admin, site, client or relay.") var scope: String
            @Option(help: "Site id (site tokens) or actor id (client tokens).") var subject: String?
            @Option(help: "Lifetime: seconds, or a number with s, m, h or d (12h, 30d).") var expiresIn: String?
            @Option(help: "A label for the token.") var name: String?
            func validate() throws {
                if let expiresIn, DurationText.seconds(expiresIn) == nil {
                    throw ValidationError("--expires-in must be a positive duration (3600, 90s, 30m, 12h, 7d), got \(expiresIn)")
                }
            }
            func request(_ c: AdminClient) async throws -> Any? {
                var body: [String: Any] = ["name": name ?? "cli \(scope)", "scope": scope]
                if let subject { body["subject"] = subject }
                if let expiresIn, let s = DurationText.seconds(expiresIn) { body["expires_at"] = Int(Date().timeIntervalSince1970) + s }
                return try await c.call("POST", "tokens", body: body)
            }
        }
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List tokens (never their secrets).")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "tokens") }
        }
        struct Revoke: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "Revoke a token.")
            @OptionGroup var connection: PortalConnection
            @Argument(help: "The token id.") var id: String
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("DELETE", "tokens/\(id)") }
        }
    }

    struct GatewayCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "gateway", abstract: "Registered gateways.", subcommands: [List.self])
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List gateways.")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "gateways") }
        }
    }

    struct RelayCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "relay", abstract: "Registered relays.", subcommands: [List.self])
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List relays.")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "relays") }
        }
    }

    struct ClientCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "client", abstract: "Registered clients.", subcommands: [List.self])
        struct List: AdminSubcommand {
            static let configuration = CommandConfiguration(abstract: "List clients.")
            @OptionGroup var connection: PortalConnection
            func request(_ c: AdminClient) async throws -> Any? { try await c.call("GET", "clients") }
        }
    }
}
