import FZCore

/// How this host's NAT maps one local UDP socket towards different destinations (RFC 4787 §4.1),
/// as far as the relays' answers can tell.
public enum MappingBehaviour: String, Sendable, Equatable {
    /// The relays saw a local address and port of this host: nothing translates in between.
    case none
    /// Every relay (of one address family) saw the same reflexive address and port: a peer can reach
    /// this socket at the address any relay reports, so hole punching works.
    case endpointIndependent = "endpoint-independent"
    /// Relays saw different reflexive ports or addresses: each destination gets its own mapping, so
    /// the address a relay reports is useless to a peer, and connections need a relay.
    case endpointDependent = "endpoint-dependent"
    /// Behind a NAT, but fewer than two relays of one family answered, so there was nothing to
    /// compare; or no relay answered at all.
    case unknown
}

/// The result of a netcheck: per relay the median RTT and the reflexive address, the mapping
/// behaviour and the preferred (lowest median RTT) relay. Pure: built from `NetcheckProbe`'s samples
/// and the host's own addresses.
public struct NetcheckReport: Sendable, Equatable {
    public struct Relay: Sendable, Equatable {
        public var address: SocketAddress
        /// The median RTT in milliseconds; nil when the relay never answered.
        public var rttMilliseconds: Double?
        /// The reflexive address it reported (the most frequent one, should it have changed).
        public var mapped: SocketAddress?
        public var samples: Int
        public var sent: Int

        public init(address: SocketAddress, rttMilliseconds: Double?, mapped: SocketAddress?, samples: Int, sent: Int) {
            self.address = address
            self.rttMilliseconds = rttMilliseconds
            self.mapped = mapped
            self.samples = samples
            self.sent = sent
        }
    }

    public var relays: [Relay]
    public var mapping: MappingBehaviour
    public var preferredRelay: SocketAddress?

    /// - Parameters:
    ///   - localAddresses: the host's interface addresses (`LocalAddresses.all()`).
    ///   - localPorts: the port of the probing socket per family: a reflexive address counts as local
    ///     only with the socket's own port, since a NAT on this host (a container's) keeps the IP's
    ///     meaning but not the port.
    public init(samples: [NetcheckProbe.RelaySamples], localAddresses: [IPAddress], localPorts: [AddressFamily: UInt16]) {
        relays = samples.map { s in
            Relay(address: s.address, rttMilliseconds: Self.median(s.rtts.map(Self.milliseconds)),
                  mapped: Self.mostFrequent(s.mapped), samples: s.rtts.count, sent: s.sent)
        }
        mapping = Self.classify(mapped: relays.compactMap(\.mapped), localAddresses: localAddresses, localPorts: localPorts)
        preferredRelay = Self.preferred(relays)
    }

    // MARK: the decisions

    /// The middle sample; for an even count, the mean of the two middle ones. Nil for no samples.
    public static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    /// The value seen most often; ties go to the one seen first.
    static func mostFrequent(_ values: [SocketAddress]) -> SocketAddress? {
        var best: (value: SocketAddress, count: Int)?
        for v in values {
            let n = values.lazy.filter { $0 == v }.count
            if n > (best?.count ?? 0) { best = (v, n) }
        }
        return best?.value
    }

    /// Per address family (an IPv4 and an IPv6 relay never see the same address, and the two
    /// families are translated by different boxes, if at all):
    /// - every reflexive address is a local address with the socket's port -> `none` for that family;
    /// - two relays saw different reflexive addresses -> `endpointDependent`;
    /// - otherwise, with at least two relays -> `endpointIndependent`; with one, `unknown`.
    /// The families combine to the one that matters for connectivity: dependent wins over
    /// independent (the NAT that breaks hole punching is what a user needs to hear about), a known
    /// NAT wins over unknown, and `none` only when every family that answered is untranslated.
    public static func classify(mapped: [SocketAddress], localAddresses: [IPAddress],
                                localPorts: [AddressFamily: UInt16]) -> MappingBehaviour {
        var perFamily: [MappingBehaviour] = []
        for family in [AddressFamily.v4, .v6] {
            let seen = mapped.filter { $0.family == family }
            guard let first = seen.first else { continue }
            if seen.allSatisfy({ localAddresses.contains($0.ip) && $0.port == localPorts[family] }) {
                perFamily.append(.none)
            } else if seen.contains(where: { $0 != first }) {
                perFamily.append(.endpointDependent)
            } else {
                perFamily.append(seen.count >= 2 ? .endpointIndependent : .unknown)
            }
        }
        for verdict in [MappingBehaviour.endpointDependent, .endpointIndependent, .unknown] where perFamily.contains(verdict) {
            return verdict
        }
        return perFamily.isEmpty ? .unknown : .none
    }

    /// The relay with the lowest median RTT; ties go to the one listed first. Nil if none answered.
    static func preferred(_ relays: [Relay]) -> SocketAddress? {
        var best: Relay?
        for r in relays {
            guard let rtt = r.rttMilliseconds else { continue }
            if best == nil || rtt < best!.rttMilliseconds! { best = r }
        }
        return best?.address
    }

    static func milliseconds(_ d: Duration) -> Double { Double(d.nanosecondsClamped) / 1e6 }

    // MARK: output

    /// What a person reads: one line per relay, then the mapping and the preferred relay.
    public var text: String {
        var lines: [String] = []
        for r in relays {
            if let rtt = r.rttMilliseconds, let mapped = r.mapped {
                lines.append("relay \(r.address): rtt \(Self.format(rtt, decimals: 1)) ms, mapped \(mapped) (\(r.samples)/\(r.sent) answered)")
            } else {
                lines.append("relay \(r.address): unreachable (0/\(r.sent) answered)")
            }
        }
        lines.append("mapping: \(mapping.rawValue)")
        lines.append("preferred relay: \(preferredRelay.map { "\($0)" } ?? "none")")
        return lines.joined(separator: "\n")
    }

    /// Exactly one JSON object on one line:
    /// `{"relays": [{"address": "IP:PORT", "rtt_ms": N, "mapped": "IP:PORT"}], "mapping": "...", "preferred_relay": "IP:PORT"}`
    /// with `null` for an unreachable relay's `rtt_ms` and `mapped`, and for `preferred_relay` when
    /// no relay answered.
    public var json: String {
        let items = relays.map { r in
            "{\"address\": \(Self.quoted(r.address)), \"rtt_ms\": \(r.rttMilliseconds.map { Self.format($0, decimals: 3) } ?? "null"), "
                + "\"mapped\": \(r.mapped.map(Self.quoted) ?? "null")}"
        }
        return "{\"relays\": [\(items.joined(separator: ", "))], \"mapping\": \"\(mapping.rawValue)\", "
            + "\"preferred_relay\": \(preferredRelay.map(Self.quoted) ?? "null")}"
    }

    /// Addresses print as `1.2.3.4:5` or `[::1]:5`: nothing JSON would need to escape.
    private static func quoted(_ a: SocketAddress) -> String { "\"\(a)\"" }

    /// Fixed-point text without Foundation; `value` is a non-negative RTT.
    static func format(_ value: Double, decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = Int64((value * scale).rounded())
        let whole = scaled / Int64(scale)
        guard decimals > 0 else { return "\(whole)" }
        let fraction = String(scaled % Int64(scale))
        return "\(whole)." + String(repeating: "0", count: decimals - fraction.count) + fraction
    }
}
