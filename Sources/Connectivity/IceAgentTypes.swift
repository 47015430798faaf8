import FZCore
import FZCrypto

/// RFC 8445 §6.1.1: the controlling agent nominates; the client is controlling, the gateway controlled.
public enum IceRole: Sendable, Equatable {
    case controlling, controlled
}

/// Short-term credentials (RFC 8445 §5.3): the ufrag and password an agent signals with its candidates.
public struct IceCredentials: Sendable, Equatable {
    public var ufrag: String
    public var password: String

    public init(ufrag: String, password: String) {
        self.ufrag = ufrag
        self.password = password
    }

    /// 8 ice-chars of ufrag (48 bits, §5.3 wants at least 24) and 24 of password (144 bits, at
    /// least 128), from libsodium's CSPRNG.
    public static func random() -> IceCredentials {
        IceCredentials(ufrag: randomIceString(8), password: randomIceString(24))
    }

    static func randomIceString(_ n: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        return String(decoding: SecureRandom.bytes(n).map { alphabet[Int($0 & 63)] }, as: UTF8.self)
    }
}

/// Where a local candidate's datagrams leave from and arrive on: a socket bound at a host
/// address (host, server-reflexive and peer-reflexive candidates share their base's socket), or
/// a TURN allocation, named by its relayed address, whose traffic the caller passes through the
/// `TURNClient` (`send` out, unwrapped ChannelData / Data indications in).
public enum IceVia: Hashable, Sendable, CustomStringConvertible {
    case socket(SocketAddress)
    case relay(SocketAddress)

    public var address: SocketAddress {
        switch self {
        case .socket(let a), .relay(let a): a
        }
    }

    public var isRelay: Bool { if case .relay = self { true } else { false } }

    public var description: String {
        switch self {
        case .socket(let a): "socket \(a)"
        case .relay(let a): "relay \(a)"
        }
    }
}

/// A datagram the agent wants sent: from `via` to `destination`. For `.relay` the caller sends
/// it through the TURN client of that allocation (which needs a permission for the destination;
/// `TURNClient.createPermission` is idempotent, so call it per transmit or per remote candidate).
public struct IceTransmit: Sendable, Equatable {
    public var via: IceVia
    public var destination: SocketAddress
    public var bytes: [UInt8]
}

/// A candidate pair as the agent's owner sees it.
public struct IcePair: Hashable, Sendable, CustomStringConvertible {
    /// The local candidate the pair is formed with: host or relayed (server-reflexive candidates
    /// are replaced by their base, RFC 8445 §6.1.2.4).
    public var local: Candidate
    public var remote: Candidate
    public var via: IceVia
    /// RFC 8445 §6.1.2.3.
    public var priority: UInt64

    /// Relayed when either end is a relayed candidate: direct pairs are always preferred.
    public var isRelayed: Bool { via.isRelay || local.isRelayed || remote.isRelayed }

    public var description: String { "\(via) -> \(remote.address) (\(remote.kind.rawValue))" }
}

public enum IceState: Sendable, Equatable {
    /// No pair yet (no remote candidate or credentials).
    case new
    case checking
    /// A pair carries data (`selectedPair`).
    case connected
    /// The selected pair died and no other works; checks continue until `connectTimeout`.
    case disconnected
    /// Nothing worked within `connectTimeout`; the agent does nothing more (an ICE restart is a new agent).
    case failed
}

public enum IceEvent: Sendable, Equatable {
    /// A local candidate to signal to the peer (`ice_candidates`); redundant and peer-reflexive
    /// ones are not announced (RFC 8445 §5.1.3, §7.2.5.3.1).
    case newLocalCandidate(Candidate)
    /// Data goes over this pair from now on: the first working pair, an upgrade, or a failover.
    case selected(IcePair)
    /// Nomination completed on this pair (controlling: our USE-CANDIDATE check was answered;
    /// controlled: the peer's USE-CANDIDATE arrived on a working pair).
    case nominated(IcePair)
    /// The selected pair stopped answering (consent lost, RFC 7675); a `selected` event follows
    /// when another pair works.
    case pairFailed(IcePair)
    /// Role conflict resolved by switching roles (RFC 8445 §7.3.1.1, §7.2.5.1).
    case roleChanged(IceRole)
    case disconnected
    case connectionFailed
}

/// Counters for metrics; every dropped input is counted here.
public struct IceAgentStats: Sendable, Equatable {
    public var checksSent: UInt64 = 0
    public var retransmissions: UInt64 = 0
    public var keepalivesSent: UInt64 = 0
    public var checksTimedOut: UInt64 = 0
    public var requestsReceived: UInt64 = 0
    public var successResponsesSent: UInt64 = 0
    public var errorResponsesSent: UInt64 = 0
    public var responsesReceived: UInt64 = 0
    /// STUN that does not decode, or a Binding request without FINGERPRINT (RFC 8445 §7.2.2).
    public var malformedDropped: UInt64 = 0
    /// Requests without USERNAME, MESSAGE-INTEGRITY, PRIORITY or a role attribute (answered 400).
    public var badRequests: UInt64 = 0
    /// Requests with a bad MESSAGE-INTEGRITY (answered 401) and responses with a bad or missing one (dropped).
    public var unauthenticatedDropped: UInt64 = 0
    /// Requests for another ufrag: not ours (another agent on the socket may take them).
    public var foreignDropped: UInt64 = 0
    /// Responses to no transaction of ours.
    public var unmatchedDropped: UInt64 = 0
    /// Responses from another address or on another base than the request went (§7.2.5.2.1).
    public var asymmetricResponses: UInt64 = 0
    /// Requests on a `via` no local candidate has.
    public var unknownBaseDropped: UInt64 = 0
    public var roleConflicts: UInt64 = 0
    public var peerReflexiveRemote: UInt64 = 0
    public var peerReflexiveLocal: UInt64 = 0
    public var pairsFailed: UInt64 = 0

    public init() {}
}

/// Everything that shapes an `IceAgent`; the timers are explained in docs/ice.md.
public struct IceAgentConfig: Sendable {
    public var role: IceRole
    /// RFC 8445 §7.1.3: random, compared in role conflicts.
    public var tieBreaker: UInt64
    public var local: IceCredentials
    /// Ta (RFC 8445 §14.2): one new check per 20 ms. The RFC's default is 50 ms for media
    /// sessions sharing a path; ours has a handful of pairs and connecting fast is the point.
    public var pacing: Duration = .milliseconds(20)
    /// First retransmission of a check; doubled each time up to `maxRTO`, `checkTransmissions`
    /// sends in all: 0, .1, .3, .7, 1.5, 2.5, 3.5 s, given up at 4.5 s. Short, because the first
    /// checks of a hole punch often cross (each dropped by the other side's NAT before it sent).
    public var checkRTO: Duration = .milliseconds(100)
    public var maxRTO: Duration = .seconds(1)
    public var checkTransmissions = 7
    /// While traffic flows: a consent check on the selected pair every 250 ms, and the pair is
    /// dead after 1.5 s without an answer (six checks lost), so failover completes within 2 s.
    public var activeInterval: Duration = .milliseconds(250)
    public var activeFailureTimeout: Duration = .milliseconds(1500)
    /// While traffic flows, the warm backup pair is checked once a second (dead after 3 s).
    public var backupInterval: Duration = .seconds(1)
    /// Idle: one check per 15 s per warm pair, holding NAT mappings (most last ≥ 30 s) and consent.
    public var idleInterval: Duration = .seconds(15)
    /// RFC 7675 §5.1: consent expires 30 s after the last answer.
    public var consentTimeout: Duration = .seconds(30)
    /// `noteTraffic` within this window makes the agent active.
    public var activityWindow: Duration = .seconds(5)
    /// Failed direct pairs are retried while only a relayed pair (or none) works, after 2 s,
    /// doubling to 60 s: how a relayed connection upgrades to direct, cheaply.
    public var retryInitial: Duration = .seconds(2)
    public var retryMax: Duration = .seconds(60)
    /// Consecutive answered checks a direct pair needs before it replaces a selected relayed one.
    public var upgradeConfirmations = 2
    /// How long after checking began a working relayed pair waits for a direct one before the
    /// controlling agent nominates it (only while direct pairs are still being checked).
    public var relayedNominationDelay: Duration = .milliseconds(150)
    /// How often a direct pair that works is checked while a relayed one is selected, until it has
    /// `upgradeConfirmations` answers and takes over.
    public var confirmInterval: Duration = .milliseconds(50)
    /// A relayed path moves to the relayed backup through other relays when the backup's RTT
    /// times 1.25 plus this is below the selected pair's.
    public var relaySwitchMargin: Duration = .milliseconds(5)
    /// No working pair this long after checking (or disconnection) started: `connectionFailed`.
    public var connectTimeout: Duration = .seconds(15)
    public var maxRemoteCandidates = 64
    public var maxPairs = 128
    public var software: String?

    public init(role: IceRole, local: IceCredentials = .random(), tieBreaker: UInt64? = nil) {
        self.role = role
        self.local = local
        self.tieBreaker = tieBreaker ?? SecureRandom.bytes(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
}
