import ArgumentParser
import FZCore

/// `fz-client netcheck`: what a user runs first when a connection is slow (like `tailscale
/// netcheck`): asks each relay for its view of this host over STUN Binding from one socket, and
/// prints the RTTs, the reflexive addresses, the NAT's mapping behaviour and the relay to prefer.
struct NetcheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netcheck",
        abstract: "Measure RTT to relays and how this host's NAT maps UDP.",
        discussion: """
            Sends STUN Binding requests (RFC 8489) to every --relay from one UDP socket per address \
            family, several per relay, and reports per relay the median RTT and the mapped address \
            (XOR-MAPPED-ADDRESS). mapping: none (a relay saw one of this host's own addresses), \
            endpoint-independent (every relay saw the same address and port: hole punching works), \
            endpoint-dependent (relays saw different ports: connections will go through a relay), \
            unknown (behind a NAT, but fewer than two relays of one family answered). \
            The preferred relay has the lowest median RTT. A relay that does not answer is reported \
            as unreachable once the time limit (1.5 s) is up.
            """)

    @Option(name: .customLong("relay"),
            help: ArgumentHelp("A relay's STUN address as IP:PORT or [IPv6]:PORT (repeatable).", valueName: "ip:port"))
    var relayTexts: [String] = []

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Option(help: ArgumentHelp("RTT samples per relay.", valueName: "n"))
    var samples: Int = 5

    var relays: [SocketAddress] {
        relayTexts.compactMap { SocketAddress($0) }
    }

    func validate() throws {
        guard !relayTexts.isEmpty else { throw ValidationError("--relay is required: give at least one relay as IP:PORT") }
        for text in relayTexts {
            guard let a = SocketAddress(text), a.port != 0 else {
                throw ValidationError("--relay: '\(text)' is not IP:PORT (IPv6 as [ADDRESS]:PORT)")
            }
        }
        guard (1...20).contains(samples) else { throw ValidationError("--samples must be 1-20, got \(samples)") }
    }

    func run() throws {
        // Each relay once, in the order given: a repeated --relay would only be measured against itself.
        var unique: [SocketAddress] = []
        for r in relays where !unique.contains(r) { unique.append(r) }
        let report = try NetcheckRunner.run(relays: unique, configuration: .init(samplesPerRelay: samples))
        print(json ? report.json : report.text)
    }
}
