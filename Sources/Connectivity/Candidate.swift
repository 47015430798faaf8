import FZCore

/// An ICE candidate (RFC 8445 §5.1): a transport address the peer may be reachable at, with the
/// type, priority and foundation the checks and pair ordering need. UDP only, as the engine is.
///
/// Candidates travel between peers as RFC 5245 `candidate:` lines (`docs/protocol.md`,
/// `ice_candidates`); `init(parsing:)` reads them strictly and `line` writes the canonical form.
public struct Candidate: Hashable, Sendable, CustomStringConvertible {
    /// The candidate type (RFC 8445 §5.1.1) and its recommended type preference (§5.1.2.2).
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        case host
        case serverReflexive = "srflx"
        case peerReflexive = "prflx"
        case relayed = "relay"

        /// 126 / 110 / 100 / 0: direct paths before relayed ones, and a peer-reflexive
        /// candidate (learned from checks) above a server-reflexive one (§5.1.2.2).
        public var typePreference: UInt32 {
            switch self {
            case .host: 126
            case .peerReflexive: 110
            case .serverReflexive: 100
            case .relayed: 0
            }
        }
    }

    /// Up to 32 `ice-char`s (ALPHA / DIGIT / "+" / "/"); candidates with the same type, base IP
    /// and STUN/TURN server share one (§5.1.1.3).
    public var foundation: String
    /// 1 for the only component this engine uses (one UDP flow carries WireGuard).
    public var component: Int
    public var priority: UInt32
    public var address: SocketAddress
    public var kind: Kind
    /// `raddr`/`rport`: the base of a server-reflexive or peer-reflexive candidate, the mapped
    /// address of a relayed one (RFC 8445 §5.1.1.3 leaves it informational).
    public var related: SocketAddress?

    public init(foundation: String, component: Int = 1, priority: UInt32, address: SocketAddress, kind: Kind,
                related: SocketAddress? = nil) {
        self.foundation = foundation
        self.component = component
        self.priority = priority
        self.address = address
        self.kind = kind
        self.related = related
    }

    /// RFC 8445 §5.1.2.1: `2^24·type + 2^8·local + (256 − component)`. The local preference
    /// (0...65535) orders candidates of one type, say by interface; 65535 when there is one.
    public static func priority(kind: Kind, localPreference: UInt16 = 65535, component: Int = 1) -> UInt32 {
        kind.typePreference << 24 | UInt32(localPreference) << 8 | UInt32(256 - min(max(component, 1), 256))
    }

    /// A host candidate for a socket bound at `address`.
    public static func host(_ address: SocketAddress, localPreference: UInt16 = 65535) -> Candidate {
        Candidate(foundation: foundation(.host, base: address.ip, server: nil),
                  priority: priority(kind: .host, localPreference: localPreference), address: address, kind: .host)
    }

    /// A server-reflexive candidate: `address` as a STUN server at `server` saw the socket at `base`.
    public static func serverReflexive(_ address: SocketAddress, base: SocketAddress, server: SocketAddress? = nil,
                                       localPreference: UInt16 = 65535) -> Candidate {
        Candidate(foundation: foundation(.serverReflexive, base: base.ip, server: server?.ip),
                  priority: priority(kind: .serverReflexive, localPreference: localPreference), address: address,
                  kind: .serverReflexive, related: base)
    }

    /// A relayed candidate: the relayed transport address a TURN server at `server` allocated
    /// (`mapped`: the client's reflexive address in the Allocate response, if known).
    public static func relayed(_ address: SocketAddress, mapped: SocketAddress? = nil, server: SocketAddress? = nil,
                               localPreference: UInt16 = 65535) -> Candidate {
        Candidate(foundation: foundation(.relayed, base: address.ip, server: server?.ip),
                  priority: priority(kind: .relayed, localPreference: localPreference), address: address,
                  kind: .relayed, related: mapped)
    }

    /// A stable foundation from type, base IP and server IP (§5.1.1.3): FNV-1a, printed in
    /// decimal, so equal inputs give equal foundations on every run and every host.
    public static func foundation(_ kind: Kind, base: IPAddress, server: IPAddress?) -> String {
        var h: UInt32 = 2_166_136_261
        for b in "\(kind.rawValue) \(base) \(server.map { "\($0)" } ?? "-")".utf8 {
            h = (h ^ UInt32(b)) &* 16_777_619
        }
        return String(h)
    }

    public var isRelayed: Bool { kind == .relayed }

    public var description: String { line }
}

// MARK: The `candidate:` line (RFC 5245 §15.1, RFC 8839 §5.1)

/// Why a `candidate:` line was rejected.
public struct CandidateParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// Does not start with `candidate:` (an `a=` prefix is allowed).
        case missingPrefix
        /// Fewer than the eight mandatory fields (`foundation` … `typ` type).
        case tooFewFields
        case badFoundation
        case badComponent
        /// Anything but UDP (TCP candidates, RFC 6544, are not supported).
        case unsupportedTransport(String)
        case badPriority
        /// Not an IP address: an FQDN or an mDNS `.local` name (RFC 8839 §5.1) would need a resolver.
        case unresolvedAddress(String)
        case badPort
        /// The seventh field is not `typ`, or the type is unknown.
        case badType
        /// `raddr` without `rport` (or the reverse), or either malformed.
        case badRelatedAddress
        /// An extension name without a value.
        case badExtension
    }

    public var kind: Kind

    public init(_ kind: Kind) { self.kind = kind }

    public var description: String { "bad candidate line: \(kind)" }
}

extension Candidate {
    /// Parses an RFC 5245 `candidate:` line as aioice, libnice, Chrome and Firefox write them:
    /// `candidate:1 1 UDP 2130706431 10.0.0.1 50000 typ host`, optionally followed by
    /// `raddr A rport P` and `name value` extensions (`generation 0`, `ufrag …`, `network-id …`),
    /// which are ignored. Transport and type are case-insensitive; fields are separated by single
    /// or repeated spaces. Anything else is a typed error, never a trap.
    public init(parsing text: String) throws(CandidateParseError) {
        var s = Substring(text)
        if s.hasPrefix("a=") { s = s.dropFirst(2) }
        guard s.hasPrefix("candidate:") else { throw CandidateParseError(.missingPrefix) }
        s = s.dropFirst("candidate:".count)
        // Trailing CR/LF from an SDP body are not part of the value.
        while let last = s.last, last.isNewline { s = s.dropLast() }
        let f = s.split(separator: " ", omittingEmptySubsequences: true)
        guard f.count >= 8 else { throw CandidateParseError(.tooFewFields) }

        let foundation = f[0]
        guard (1...32).contains(foundation.utf8.count), foundation.utf8.allSatisfy(Candidate.isIceChar) else {
            throw CandidateParseError(.badFoundation)
        }
        guard f[1].utf8.count <= 5, f[1].utf8.allSatisfy(Candidate.isDigit), let component = Int(f[1]),
            (1...256).contains(component)
        else { throw CandidateParseError(.badComponent) }
        guard f[2].lowercased() == "udp" else { throw CandidateParseError(.unsupportedTransport(String(f[2]))) }
        guard f[3].utf8.count <= 10, f[3].utf8.allSatisfy(Candidate.isDigit), let priority = UInt32(f[3]) else {
            throw CandidateParseError(.badPriority)
        }
        guard let ip = IPAddress(String(f[4])) else { throw CandidateParseError(.unresolvedAddress(String(f[4]))) }
        let port = try Candidate.port(f[5])
        guard f[6] == "typ", let kind = Kind(rawValue: f[7].lowercased()) else { throw CandidateParseError(.badType) }

        var raddr: IPAddress?
        var rport: UInt16?
        var i = 8
        while i < f.count {
            guard i + 1 < f.count else { throw CandidateParseError(.badExtension) }
            let (name, value) = (f[i], f[i + 1])
            switch name {
            case "raddr":
                guard raddr == nil, let a = IPAddress(String(value)) else { throw CandidateParseError(.badRelatedAddress) }
                raddr = a
            case "rport":
                guard rport == nil, let p = try? Candidate.port(value) else {
                    throw CandidateParseError(.badRelatedAddress)
                }
                rport = p
            default:
                break  // generation, ufrag, network-id, network-cost, tcptype...: not ours to act on
            }
            i += 2
        }
        let related: SocketAddress?
        switch (raddr, rport) {
        case (nil, nil): related = nil
        case (let a?, let p?): related = SocketAddress(ip: a, port: p)
        default: throw CandidateParseError(.badRelatedAddress)
        }
        self.init(foundation: String(foundation), component: component, priority: priority,
                  address: SocketAddress(ip: ip, port: port), kind: kind, related: related)
    }

    /// The canonical line: `candidate:F C udp P ADDR PORT typ T [raddr A rport P]` (no `a=`, no
    /// extensions; IPv6 addresses without brackets, as SDP writes them).
    public var line: String {
        var s = "candidate:\(foundation) \(component) udp \(priority) \(address.ip) \(address.port) typ \(kind.rawValue)"
        if let r = related { s += " raddr \(r.ip) rport \(r.port)" }
        return s
    }

    static func port(_ s: Substring) throws(CandidateParseError) -> UInt16 {
        guard s.utf8.count <= 5, s.utf8.allSatisfy(isDigit), let p = UInt16(s) else { throw CandidateParseError(.badPort) }
        return p
    }

    static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

    /// RFC 8445 §15.1: `ice-char = ALPHA / DIGIT / "+" / "/"`.
    static func isIceChar(_ c: UInt8) -> Bool {
        isDigit(c) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2B || c == 0x2F
    }
}
