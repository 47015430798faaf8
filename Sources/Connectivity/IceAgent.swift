import FZCore
import STUN

/// A full ICE agent (RFC 8445) for one data stream with one UDP component, trickling candidates
/// (RFC 8838), as a sans-IO state machine like `TURNClient`: datagrams and `now` in, transmits,
/// events and the next deadline out.
///
/// Inputs: `addLocalCandidate`, `addRemoteCandidate`, `setRemoteCredentials`,
/// `handleInbound(_:from:via:now:)`, `handleTimeout(now:)`, `noteTraffic(now:)`. Outputs:
/// `pollTransmit()`, `pollEvent()`, `nextDeadline`, `selectedPair`, `state`, `stats`.
///
/// Decisions where the RFCs leave room (docs/ice.md explains the timers):
/// - No frozen state: every new pair is Waiting (one stream, a handful of pairs), checked in
///   priority order one per Ta (`pacing`, 20 ms); triggered checks go first.
/// - Nomination: the controlling agent nominates the best pair that has succeeded as soon as it
///   has (a USE-CANDIDATE check on it), direct preferred over relayed whatever the priorities;
///   it re-nominates only to upgrade relayed → direct (after `upgradeConfirmations` answers in a
///   row), to move a relayed path to the warm relayed backup through other relays when that one's
///   RTT is clearly shorter (by a quarter plus `relaySwitchMargin`), or when the selected pair
///   dies — never between two working pairs of similar RTT, so it does not flap. The controlled agent follows the latest nomination, selects its best working
///   pair tentatively before one arrives, and fails over by itself when its pair dies.
/// - Liveness: consent checks (RFC 7675) on the selected pair and one warm backup (the best
///   relayed pair when the selected one is direct), fast while `noteTraffic` says data flows and
///   slow when idle; other working pairs lapse after the consent timeout.
public struct IceAgent: Sendable {
    public private(set) var config: IceAgentConfig
    public private(set) var role: IceRole
    public private(set) var remoteCredentials: IceCredentials?
    public private(set) var state: IceState = .new
    public internal(set) var stats = IceAgentStats()

    public var localCredentials: IceCredentials { config.local }

    // MARK: Candidates and pairs

    struct Local {
        var candidate: Candidate
        var via: IceVia
    }

    var locals: [Local] = []
    var remotes: [Candidate] = []

    enum CheckState: Equatable { case waiting, inProgress, succeeded, failed }

    struct PairKey: Hashable {
        var via: IceVia
        var remote: SocketAddress
    }

    struct Pair {
        var via: IceVia
        var local: Candidate
        var remote: Candidate
        var priority: UInt64 = 0
        var state: CheckState = .waiting
        var nominated = false
        /// Controlled: USE-CANDIDATE arrived before our own check on the pair succeeded (§7.3.1.5).
        var nominateOnSuccess = false
        var lastResponseAt: Timestamp?
        /// The latest round trip of a check on the pair answered at its first transmission.
        var rtt: Duration?
        /// Answered checks in a row since the last failure.
        var confirmations = 0
        var nextKeepaliveAt: Timestamp = .distantFuture
        var retryAt: Timestamp = .distantFuture
        var retryBackoff: Duration
        var checkInFlight = false
        var public_: IcePair { IcePair(local: local, remote: remote, via: via, priority: priority) }
        var isRelayed: Bool { public_.isRelayed }
    }

    var pairs: [Pair] = []
    var pairIndex: [PairKey: Int] = [:]
    var triggered: [Int] = []
    var nextCheckAt: Timestamp = .zero

    var selected: Int?
    var selectedAt: Timestamp = .zero
    var nominatedPair: Int?
    var everSelected = false
    var lastTrafficAt: Timestamp?
    var activeSince: Timestamp = .zero
    /// When checking (or the disconnection) began: `connectTimeout` counts from here.
    var checkingSince: Timestamp?
    /// When a relayed pair that already works gets nominated if no direct pair answered by then.
    var relayedHold: Timestamp?
    var remoteEndOfCandidates = false
    var prflxCounter = 0

    // MARK: Transactions

    struct Transaction {
        var pair: Int
        var bytes: [UInt8]
        var transmissions: Int
        var sentAt: Timestamp
        var nextAt: Timestamp
        var useCandidate: Bool
        /// A consent/keepalive check: sent once; its answer refreshes the pair, its loss is
        /// judged by the liveness timers, not by retransmissions.
        var consent: Bool
        var controlling: Bool
        var priority: UInt32
    }

    var pending: [TransactionID: Transaction] = [:]

    var transmits = OutputQueue<IceTransmit>()
    var events = OutputQueue<IceEvent>()

    public init(config: IceAgentConfig) {
        self.config = config
        self.role = config.role
    }

    // MARK: Outputs

    public mutating func pollTransmit() -> IceTransmit? { transmits.next() }

    public mutating func pollEvent() -> IceEvent? { events.next() }

    /// The pair data goes over now.
    public var selectedPair: IcePair? { selected.map { pairs[$0].public_ } }

    /// The latest measured round trip on the selected pair.
    public var selectedRTT: Duration? { selected.flatMap { pairs[$0].rtt } }

    /// The pair nomination last completed on.
    public var nominated: IcePair? { nominatedPair.map { pairs[$0].public_ } }

    /// Every pair with whether it works, for diagnostics and tests.
    public var checklist: [(pair: IcePair, succeeded: Bool)] { pairs.map { ($0.public_, $0.state == .succeeded) } }

    public var localCandidates: [Candidate] { locals.map(\.candidate) }

    /// Whether a check of this agent's waits for the response with this transaction ID (how an
    /// owner of many agents routes a response without offering it to each).
    public func isAwaiting(_ id: TransactionID) -> Bool { pending[id] != nil }
    public var remoteCandidates: [Candidate] { remotes }

    /// When `handleTimeout` must next be called (`.distantFuture`: nothing scheduled).
    public var nextDeadline: Timestamp {
        guard state != .failed else { return .distantFuture }
        var d = Timestamp.distantFuture
        for t in pending.values { d = min(d, t.nextAt) }
        if remoteCredentials != nil, !triggered.isEmpty || pairs.contains(where: { $0.state == .waiting && !$0.checkInFlight }) {
            d = min(d, nextCheckAt)
        }
        for (i, p) in pairs.enumerated() {
            switch p.state {
            case .failed: d = min(d, p.retryAt)
            case .succeeded:
                d = min(d, p.nextKeepaliveAt)
                if let death = deathTime(i) { d = min(d, death) }
            default: break
            }
        }
        if let s = checkingSince, state == .checking || state == .disconnected { d = min(d, s + config.connectTimeout) }
        if let h = relayedHold { d = min(d, h) }
        return d
    }

    // MARK: Inputs: candidates and credentials

    /// Adds a local candidate (trickled: at any time). `via` defaults to the candidate's base:
    /// its own address for host, `related` for server-reflexive, the relayed address for relayed.
    public mutating func addLocalCandidate(_ c: Candidate, via: IceVia? = nil, now: Timestamp) {
        guard c.component == 1, state != .failed else { return }
        let v: IceVia
        if let via {
            v = via
        } else {
            switch c.kind {
            case .host: v = .socket(c.address)
            case .serverReflexive, .peerReflexive: v = .socket(c.related ?? c.address)
            case .relayed: v = .relay(c.address)
            }
        }
        if locals.contains(where: { $0.via == v && $0.candidate.address == c.address && $0.candidate.kind == c.kind }) { return }
        // §5.1.3: a server-reflexive candidate equal to its base (no NAT) is redundant.
        let redundant = locals.contains { $0.candidate.address == c.address && $0.via == v }
        locals.append(Local(candidate: c, via: v))
        if !redundant && c.kind != .peerReflexive { events.append(.newLocalCandidate(c)) }
        for r in remotes { formPair(via: v, remote: r, now: now) }
        refreshPairLocals(via: v)
        startChecking(now: now)
    }

    /// Adds a candidate the peer signalled. One the agent learned as peer-reflexive takes the
    /// signalled type and priority (RFC 8838 §11.4), keeping its check state.
    public mutating func addRemoteCandidate(_ c: Candidate, now: Timestamp) {
        guard c.component == 1, !c.address.ip.isUnspecified, c.address.port != 0, state != .failed else { return }
        if let i = remotes.firstIndex(where: { $0.address == c.address }) {
            guard remotes[i].kind == .peerReflexive, c.kind != .peerReflexive else { return }
            remotes[i] = c
            for j in pairs.indices where pairs[j].remote.address == c.address {
                pairs[j].remote = c
                pairs[j].priority = pairPriority(local: pairs[j].local, remote: c)
            }
            return
        }
        guard remotes.count < config.maxRemoteCandidates else { return }
        remotes.append(c)
        for v in Set(locals.map(\.via)) { formPair(via: v, remote: c, now: now) }
        startChecking(now: now)
    }

    /// The peer's ufrag and password (signalled with its candidates). Checks start once known;
    /// inbound checks are answered before (RFC 8838 §8).
    public mutating func setRemoteCredentials(_ credentials: IceCredentials, now: Timestamp) {
        remoteCredentials = credentials
        startChecking(now: now)
    }

    /// The peer will send no more candidates: once every pair has failed the agent gives up
    /// without waiting for `connectTimeout`.
    public mutating func setRemoteEndOfCandidates(now: Timestamp) {
        remoteEndOfCandidates = true
        checkGiveUp(now: now)
    }

    /// Says data is flowing (call it for each batch sent or received): for the next
    /// `activityWindow` the agent checks the selected pair every `activeInterval` and declares it
    /// dead after `activeFailureTimeout` without an answer.
    public mutating func noteTraffic(now: Timestamp) {
        if !isActive(now) {
            activeSince = now
            if let s = selected { pairs[s].nextKeepaliveAt = now }
            if let b = backup { pairs[b].nextKeepaliveAt = now }
        }
        lastTrafficAt = now
    }

    func isActive(_ now: Timestamp) -> Bool {
        guard let t = lastTrafficAt else { return false }
        return now < t + config.activityWindow
    }

    mutating func startChecking(now: Timestamp) {
        if state == .new, remoteCredentials != nil, !pairs.isEmpty {
            state = .checking
            checkingSince = now
            nextCheckAt = now
        }
    }

    // MARK: Pairs

    /// The local candidate pairs on `via` are formed with: the highest-priority one with that
    /// base (a server-reflexive candidate is replaced by its host base, §6.1.2.4).
    func pairingLocal(_ via: IceVia) -> Candidate? {
        var best: Candidate?
        for l in locals where l.via == via && l.candidate.kind != .peerReflexive {
            if best == nil || l.candidate.priority > best!.priority { best = l.candidate }
        }
        return best
    }

    /// RFC 8445 §6.1.2.3: `2^32·MIN(G,D) + 2·MAX(G,D) + (G>D ? 1 : 0)`, G the controlling side's.
    func pairPriority(local: Candidate, remote: Candidate) -> UInt64 {
        let (g, d) = role == .controlling ? (UInt64(local.priority), UInt64(remote.priority))
            : (UInt64(remote.priority), UInt64(local.priority))
        return (min(g, d) << 32) + 2 * max(g, d) + (g > d ? 1 : 0)
    }

    @discardableResult
    mutating func formPair(via: IceVia, remote: Candidate, now: Timestamp) -> Int? {
        let key = PairKey(via: via, remote: remote.address)
        if let i = pairIndex[key] { return i }
        guard via.address.family == remote.address.family, pairs.count < config.maxPairs,
            let local = pairingLocal(via)
        else { return nil }
        var p = Pair(via: via, local: local, remote: remote, retryBackoff: config.retryInitial)
        p.priority = pairPriority(local: local, remote: remote)
        pairs.append(p)
        pairIndex[key] = pairs.count - 1
        return pairs.count - 1
    }

    mutating func refreshPairLocals(via: IceVia) {
        guard let l = pairingLocal(via) else { return }
        for i in pairs.indices where pairs[i].via == via && pairs[i].local != l {
            pairs[i].local = l
            pairs[i].priority = pairPriority(local: l, remote: pairs[i].remote)
        }
    }

    /// `a` is the better path: direct beats relayed, then pair priority.
    func better(_ a: Int, _ b: Int) -> Bool {
        let (pa, pb) = (pairs[a], pairs[b])
        if pa.isRelayed != pb.isRelayed { return !pa.isRelayed }
        return pa.priority > pb.priority
    }

    func bestWorking(excluding: Int? = nil, relayedOnly: Bool = false, avoiding relays: Set<IPAddress> = []) -> Int? {
        var best: Int?
        for i in pairs.indices where pairs[i].state == .succeeded && i != excluding && (!relayedOnly || pairs[i].isRelayed) {
            if !relays.isEmpty, !relayIPs(i).isDisjoint(with: relays) { continue }
            if best == nil || better(i, best!) { best = i }
        }
        return best
    }

    /// The relays a pair depends on: ours (its via) and the peer's (a relayed remote candidate).
    func relayIPs(_ i: Int) -> Set<IPAddress> {
        var s = Set<IPAddress>()
        if case .relay(let a) = pairs[i].via { s.insert(a.ip) }
        if pairs[i].remote.isRelayed { s.insert(pairs[i].remote.address.ip) }
        if pairs[i].local.isRelayed { s.insert(pairs[i].local.address.ip) }
        return s
    }

    /// The pair kept warm beside the selected one, and where traffic goes when the selected one
    /// dies: the best relayed pair when the selected one is direct (the path that survives a NAT
    /// rebinding or a cut LAN); when the selected one is relayed, the best pair through other
    /// relays (a dead relay takes every pair through it along), else the next best pair.
    var backup: Int? {
        guard let s = selected else { return nil }
        if pairs[s].isRelayed {
            return bestWorking(excluding: s, avoiding: relayIPs(s)) ?? bestWorking(excluding: s)
        }
        return bestWorking(excluding: s, relayedOnly: true)
    }

    func isClearlyFaster(_ b: Int, than s: Int) -> Bool {
        guard pairs[b].state == .succeeded, pairs[b].confirmations >= config.upgradeConfirmations,
              let rb = pairs[b].rtt, let rs = pairs[s].rtt
        else { return false }
        return rb * 5 / 4 + config.relaySwitchMargin < rs
    }

    /// A direct pair that works while a relayed one is selected collects confirmations before the upgrade.
    func isConfirming(_ i: Int) -> Bool {
        guard let s = selected, pairs[s].isRelayed else { return false }
        return !pairs[i].isRelayed && pairs[i].state == .succeeded && pairs[i].confirmations < config.upgradeConfirmations
    }

    func keepaliveInterval(_ i: Int, now: Timestamp) -> Duration? {
        let active = isActive(now)
        if i == selected { return active ? config.activeInterval : config.idleInterval }
        if isConfirming(i) { return config.confirmInterval }
        if i == backup { return active ? config.backupInterval : config.idleInterval }
        return nil
    }

    /// When a working pair counts as dead: the consent timeout after its last answer, or sooner
    /// for the selected and backup pairs while traffic flows (`activeFailureTimeout`, three backup
    /// intervals). The fast bound applies only if it falls inside the current activity window, so
    /// an idle agent's deadline is never in the past (no busy loop once traffic stops).
    func deathTime(_ i: Int) -> Timestamp? {
        guard let r = pairs[i].lastResponseAt else { return nil }
        let slow = r + config.consentTimeout
        guard let t = lastTrafficAt else { return slow }
        let fast: Timestamp
        if i == selected {
            fast = max(r, activeSince, selectedAt) + config.activeFailureTimeout
        } else if i == backup {
            fast = max(r, activeSince) + config.backupInterval * 3
        } else {
            return slow
        }
        return fast < t + config.activityWindow ? min(fast, slow) : slow
    }

    // MARK: Timers

    public mutating func handleTimeout(now: Timestamp) {
        guard state != .failed else { return }
        // Retransmissions, in a stable order so runs are reproducible.
        let due = pending.filter { $0.value.nextAt <= now }.sorted { $0.value.nextAt < $1.value.nextAt }
        for (id, var t) in due {
            guard pending[id] != nil else { continue }
            if t.consent || t.transmissions >= config.checkTransmissions {
                pending[id] = nil
                if !t.consent {
                    stats.checksTimedOut += 1
                    pairs[t.pair].checkInFlight = false
                    pairFailed(t.pair, now: now)
                }
                continue
            }
            t.transmissions += 1
            t.nextAt = now + rto(after: t.transmissions)
            pending[id] = t
            stats.retransmissions += 1
            transmits.append(IceTransmit(via: pairs[t.pair].via, destination: pairs[t.pair].remote.address, bytes: t.bytes))
        }
        // Liveness of working pairs.
        for i in pairs.indices where pairs[i].state == .succeeded {
            if let death = deathTime(i), now >= death { pairFailed(i, now: now) }
        }
        if let h = relayedHold, now >= h {
            relayedHold = nil
            evaluate(now: now)
        }
        // Retries of failed pairs.
        for i in pairs.indices where pairs[i].state == .failed && pairs[i].retryAt <= now {
            pairs[i].retryAt = .distantFuture
            pairs[i].state = .waiting
        }
        // Keepalives / consent on the warm pairs.
        if remoteCredentials != nil {
            for i in pairs.indices where pairs[i].state == .succeeded && pairs[i].nextKeepaliveAt <= now {
                guard let interval = keepaliveInterval(i, now: now) else {
                    pairs[i].nextKeepaliveAt = .distantFuture
                    continue
                }
                sendCheck(i, useCandidate: false, consent: true, now: now)
                pairs[i].nextKeepaliveAt = now + interval
            }
        }
        // One ordinary check per Ta: triggered first, then the best waiting pair.
        if remoteCredentials != nil, now >= nextCheckAt {
            var next: Int?
            while !triggered.isEmpty {
                let i = triggered.removeFirst()
                if pairs[i].state == .waiting && !pairs[i].checkInFlight {
                    next = i
                    break
                }
            }
            if next == nil {
                for i in pairs.indices where pairs[i].state == .waiting && !pairs[i].checkInFlight {
                    if next == nil || pairs[i].priority > pairs[next!].priority { next = i }
                }
            }
            if let i = next {
                sendCheck(i, useCandidate: false, consent: false, now: now)
                nextCheckAt = now + config.pacing
            }
        }
        evaluate(now: now)
        checkGiveUp(now: now)
    }

    /// The wait after the `n`-th transmission of a check: RTO doubled each time, capped.
    func rto(after n: Int) -> Duration { min(config.checkRTO * (1 << min(n - 1, 20)), config.maxRTO) }

    mutating func checkGiveUp(now: Timestamp) {
        guard state == .checking || state == .disconnected, let since = checkingSince else { return }
        let anyHope = pairs.contains { $0.state != .failed } || pairs.contains { $0.retryAt != .distantFuture }
        if now >= since + config.connectTimeout || (remoteEndOfCandidates && !pairs.isEmpty && !anyHope) {
            state = .failed
            pending.removeAll()
            triggered.removeAll()
            events.append(.connectionFailed)
        }
    }

    // MARK: Pair outcomes

    mutating func pairFailed(_ i: Int, now: Timestamp) {
        let wasWorking = pairs[i].state == .succeeded
        pairs[i].state = .failed
        pairs[i].confirmations = 0
        pairs[i].nextKeepaliveAt = .distantFuture
        pairs[i].nominateOnSuccess = false
        stats.pairsFailed += 1
        scheduleRetry(i, now: now)
        if i == selected {
            events.append(.pairFailed(pairs[i].public_))
            // The warm backup first: the other working pairs were not checked lately and may
            // share the fate of the one that died.
            let warm = backup
            selected = nil
            if let b = warm ?? bestWorking() {
                select(b, now: now)
                if role == .controlling { sendCheck(b, useCandidate: true, consent: false, now: now) }
            } else {
                state = .disconnected
                checkingSince = now
                events.append(.disconnected)
                // Everything is worth a try again.
                for j in pairs.indices where pairs[j].state == .failed { pairs[j].retryAt = now }
            }
        }
        if i == nominatedPair && !wasWorking { nominatedPair = nil }
    }

    /// Failed pairs are retried (with backoff) while they could improve things: any pair while
    /// nothing works, direct pairs while the selected one is relayed.
    mutating func scheduleRetry(_ i: Int, now: Timestamp) {
        let useful = selected == nil || (pairs[selected!].isRelayed && !pairs[i].isRelayed)
        guard useful, pairs[i].retryAt == .distantFuture else { return }
        pairs[i].retryAt = now + pairs[i].retryBackoff
        pairs[i].retryBackoff = min(pairs[i].retryBackoff * 2, config.retryMax)
    }

    mutating func select(_ i: Int, now: Timestamp) {
        guard selected != i else { return }
        selected = i
        selectedAt = now
        everSelected = true
        state = .connected
        pairs[i].nextKeepaliveAt = isActive(now) ? now : now + config.idleInterval
        events.append(.selected(pairs[i].public_))
        if pairs[i].isRelayed {
            for j in pairs.indices where pairs[j].state == .failed && !pairs[j].isRelayed { scheduleRetry(j, now: now) }
        } else {
            // Direct works: stop retrying what cannot improve on it.
            for j in pairs.indices where pairs[j].state == .failed { pairs[j].retryAt = .distantFuture }
        }
    }

    mutating func markNominated(_ i: Int, now: Timestamp) {
        if let n = nominatedPair, n != i { pairs[n].nominated = false }
        pairs[i].nominated = true
        pairs[i].nominateOnSuccess = false
        guard nominatedPair != i else { return }
        nominatedPair = i
        events.append(.nominated(pairs[i].public_))
        select(i, now: now)
    }

    /// Decides what to select and nominate after anything changed, then keeps the warm pairs scheduled.
    mutating func evaluate(now: Timestamp) {
        guard state != .failed else { return }
        choose(now: now)
        for i in pairs.indices where pairs[i].state == .succeeded && pairs[i].nextKeepaliveAt == .distantFuture {
            if let interval = keepaliveInterval(i, now: now) {
                pairs[i].nextKeepaliveAt = max(now, (pairs[i].lastResponseAt ?? now) + interval)
            }
        }
    }

    mutating func choose(now: Timestamp) {
        guard let best = bestWorking() else { return }
        // A relayed pair that answers first is not nominated at once while direct pairs are still
        // being checked, for at most `relayedNominationDelay` after checking began: hole punching
        // needs both sides' first checks, so a direct path usually answers a little later, and
        // starting on it spares the switch.
        if selected == nil, role == .controlling, pairs[best].isRelayed, let since = checkingSince,
           now < since + config.relayedNominationDelay,
           pairs.contains(where: { !$0.isRelayed && ($0.state == .waiting || $0.state == .inProgress) }) {
            relayedHold = since + config.relayedNominationDelay
            return
        }
        relayedHold = nil
        if let s = selected {
            // Relayed → relayed only to the warm backup through other relays, when its measured
            // round trip is clearly shorter (a quarter and `relaySwitchMargin`), so the path ends on
            // the relay with the better RTT whichever pair answered first, and never flaps.
            if role == .controlling, pairs[s].isRelayed, let b = backup, pairs[b].isRelayed, isClearlyFaster(b, than: s) {
                select(b, now: now)
                sendCheck(b, useCandidate: true, consent: false, now: now)
                return
            }
            // Upgrade relayed → direct only, after enough answers in a row; the controlled side
            // waits for the nomination.
            guard role == .controlling, pairs[s].isRelayed, !pairs[best].isRelayed,
                pairs[best].confirmations >= config.upgradeConfirmations
            else { return }
        }
        select(best, now: now)
        if role == .controlling { sendCheck(best, useCandidate: true, consent: false, now: now) }
    }

    mutating func switchRole(to r: IceRole, now: Timestamp) {
        guard role != r else { return }
        role = r
        for i in pairs.indices { pairs[i].priority = pairPriority(local: pairs[i].local, remote: pairs[i].remote) }
        events.append(.roleChanged(r))
        if r == .controlling, let s = selected, nominatedPair != s {
            sendCheck(s, useCandidate: true, consent: false, now: now)
        }
    }
}
