#if canImport(Glibc)
import Glibc
#endif
import Connectivity
import FZCore
import FZLinux
import Histogram
import STUN
import Synchronization

/// The load generator's client side: every client socket registered with one event loop thread.
///
/// Control path (allocations, binds, releases): each client's `TURNClient` (the product's sans-IO
/// client) does the protocol, one operation per client at a time, `window` clients in flight,
/// requests retransmitted after 1 s, doubling (RFC 8489 §6.2.1 with a 1 s RTO), up to the
/// pipeline's attempts. Between pipelines a 1 s maintenance scan lets each client refresh its
/// allocation and permission or channel before they expire.
///
/// Data path (steps): a pacer ticks every millisecond, adds `rate × elapsed` to a credit and sends
/// that many probes, `burst` at a time per client socket round-robin, each burst one sendmmsg from a
/// preallocated `SendQueue` (the prefix and probe fields are copied into the slot, the filler goes
/// out by iovec from one shared zero buffer). Replies are read with recvmmsg into one shared
/// `ReceivePool`. No heap allocation per datagram.
///
/// Threading: created and configured on the main thread before `start()`; afterwards everything
/// runs on the loop thread, and the main thread talks to it only through `loop.execute` and the
/// completion closures (see `Coordinator`).
final class BenchClient: @unchecked Sendable {
    struct Config: Sendable {
        var server: SocketAddress
        var peer: SocketAddress
        var transport: Transport
        var size: Int
        var username: String
        var password: String
        var realm: String?
        var burst: Int
        var serverPID: Int32?
        /// Data-path allocations get a SendQueue and bigger socket buffers; idle ones do not.
        var dataPath: Bool
        /// Data-path sockets send bursts with UDP GSO and read with UDP GRO.
        var offload: Bool
    }

    static let channelNumber: UInt16 = 0x4000

    let config: Config
    let loop: EventLoop
    let peer: EchoPeer
    private(set) var allocations: [ClientAllocation] = []
    private var thread: EventLoopThread?
    private let pool: ReceivePool

    // Data path buffers, allocated once.
    private let prefixLength: Int
    private let scratch: UnsafeMutableRawPointer
    private let filler: UnsafeMutableRawPointer
    private let fillerLength: Int
    private var active: [ClientAllocation] = []
    private var roundRobin = 0

    // Step counters (hot path: plain stored properties of the loop-confined object).
    private var run: StepRun?
    private var currentStep: UInt32 = 0
    private var nextSequence: UInt64 = 0
    private var windowFirstSequence: UInt64 = .max
    private var receivedWindow: UInt64 = 0
    private var staleProbes: UInt64 = 0
    private var clientProbes: UInt64 = 0
    private var histogram = Histogram<UInt64>(
        lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)

    private var pipeline: Pipeline?
    private var nextScan: Timestamp = .distantFuture
    private var receiveErrors = 0

    /// Opens `count` client sockets on the server's loopback address, on ports taken in order from
    /// `ports` (skipping ports in use) or, without `ports`, on ephemeral ports the kernel picks, and
    /// registers them. Call before `start()`.
    init(config: Config, count: Int, ports: ClosedRange<Int>?, peer: EchoPeer) throws {
        self.config = config
        self.peer = peer
        loop = try EventLoop()
        let gro = config.dataPath && config.offload && SocketOptions.supportsUDPGRO
        pool = ReceivePool(count: 64, capacity: gro ? 65_535 : 2048, headroom: 0, coalescing: gro)

        // The bytes in front of the probe: ChannelData header, or a Send indication up to DATA's value.
        var prefix: [UInt8]
        var filler = config.size - Probe.size
        switch config.transport {
        case .channel, .raw:
            prefix = [UInt8(Self.channelNumber >> 8), UInt8(Self.channelNumber & 0xFF),
                      UInt8(config.size >> 8), UInt8(config.size & 0xFF)]
        case .sendIndication:
            let padded = (config.size + 3) & ~3
            let message = Message(
                type: MessageType(method: .send, messageClass: .indication), transactionID: .random(),
                attributes: [.xorPeerAddress(config.peer), .data([UInt8](repeating: 0, count: config.size))])
            let encoded = message.encode()
            prefix = Array(encoded[0..<(encoded.count - padded)])
            filler += padded - config.size
        }
        prefixLength = prefix.count
        fillerLength = filler
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 16)
        scratch.initializeMemory(as: UInt8.self, repeating: 0, count: 256)
        prefix.withUnsafeBytes { scratch.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        self.scratch = scratch
        let zeros = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 64)
        zeros.initializeMemory(as: UInt8.self, repeating: 0, count: 2048)
        self.filler = zeros

        let local: IPAddress = switch config.server.ip {
        case .v4: .v4(.loopback)
        case .v6: .v6(.loopback)
        }
        var port = ports?.lowerBound ?? 0
        for index in 0..<count {
            var socket: UDPSocket?
            while socket == nil {
                guard let ports else {
                    socket = try Self.bind(SocketAddress(ip: local, port: 0), bigBuffers: config.dataPath)
                    break
                }
                guard port <= ports.upperBound else {
                    throw BenchError("the client port range \(ports) has no free port left for client \(index + 1) of \(count)")
                }
                socket = try Self.bind(SocketAddress(ip: local, port: UInt16(port)), bigBuffers: config.dataPath)
                port += 1
            }
            if gro { try SocketOptions.setUDPGRO(socket!, enabled: true) }
            let queue = config.dataPath
                ? SendQueue(count: max(config.burst, 1), capacity: 256, segmentation: config.offload) : nil
            var turnConfig = TURNClientConfig(
                server: config.server, credentials: TURNCredentials(username: config.username, password: config.password))
            // RFC 8656 §7.1: without it the server allocates IPv4; an IPv6 peer needs an IPv6 relayed address.
            if config.peer.family == .v6 { turnConfig.requestedAddressFamily = .v6 }
            let allocation = ClientAllocation(index: index, socket: socket!, queue: queue, turn: TURNClient(config: turnConfig))
            allocations.append(allocation)
            try loop.register(fd: allocation.socket.fd) { [unowned self, unowned allocation] _ in
                self.readable(allocation)
            }
        }
        loop.deadlineProvider = { [unowned self] in self.nextDeadline() }
        loop.timeoutHandler = { [unowned self] now in self.timeout(now) }
    }

    /// A client socket on `address`, or nil when the port is taken (by someone else: try the next).
    private static func bind(_ address: SocketAddress, bigBuffers: Bool) throws(SystemError) -> UDPSocket? {
        do {
            return try UDPSocket(
                bindingTo: address, receiveBufferSize: bigBuffers ? 1 << 20 : nil, sendBufferSize: bigBuffers ? 1 << 20 : nil)
        } catch {
            if error.errno == EADDRINUSE { return nil }
            throw error
        }
    }

    deinit {
        scratch.deallocate()
        filler.deallocate()
    }

    func start() throws {
        thread = try loop.start(name: "tb-client")
    }

    func stop() {
        loop.stop()
        thread?.join()
        for a in allocations { a.socket.close() }
    }

    // MARK: receive

    private func readable(_ a: ClientAllocation) {
        let n: Int
        do {
            n = try pool.receive(from: a.socket)
        } catch {
            receiveErrors += 1
            return
        }
        guard n > 0 else { return }
        let now = MonotonicClock.now()
        for i in 0..<n {
            // With GRO one read may hold a run of datagrams from the server.
            let source = pool.source(i)
            pool.forEachSegment(i) { segment in datagram(UnsafeRawBufferPointer(segment), from: source, on: a, now) }
        }
    }

    @inline(__always)
    private func datagram(_ d: UnsafeRawBufferPointer, from source: SocketAddress, on a: ClientAllocation, _ now: Timestamp) {
        guard d.count >= 4, let base = d.baseAddress else { return }
        let first = d[0]
        if first & 0xC0 == 0x40 {
            // ChannelData: the probe follows the 4-byte header.
            if d.count >= 4 + Probe.size { probe(base + 4, now.nanoseconds) }
        } else if first < 4 {
            if d.count >= Message.headerSize, d[0] == 0x00, d[1] == 0x17 {
                dataIndication(d, now.nanoseconds)
            } else {
                control(a, d, from: source, now)
            }
        }
    }

    /// A Data indication (0x0017): find the DATA attribute (0x0013) without decoding the message.
    private func dataIndication(_ d: UnsafeRawBufferPointer, _ now: UInt64) {
        var offset = Message.headerSize
        while offset + 4 <= d.count {
            let type = UInt16(d[offset]) << 8 | UInt16(d[offset + 1])
            let length = Int(UInt16(d[offset + 2]) << 8 | UInt16(d[offset + 3]))
            if type == 0x0013 {
                if length >= Probe.size && offset + 4 + length <= d.count { probe(d.baseAddress! + offset + 4, now) }
                return
            }
            offset += 4 + ((length + 3) & ~3)
        }
    }

    @inline(__always)
    private func probe(_ p: UnsafeRawPointer, _ now: UInt64) {
        guard Probe.isProbe(p) else { return }
        clientProbes &+= 1
        guard currentStep != 0, Probe.step(p) == currentStep else {
            staleProbes &+= 1
            return
        }
        let sequence = Probe.sequence(p)
        guard sequence >= windowFirstSequence else { return }
        receivedWindow &+= 1
        let sentAt = Probe.sentAt(p)
        _ = histogram.record(now > sentAt ? now - sentAt : 0)
    }

    // MARK: control path

    private struct Pipeline {
        var kind: TransactionKind
        var targets: [Int]
        var next = 0
        var inflight: [Int] = []
        var window: Int
        var result: PipelineResult
        var startedAt: Timestamp
        var completion: @Sendable (PipelineResult) -> Void
    }

    /// Runs `kind` for every allocation in `targets` (`window` at a time); calls `completion` on
    /// the loop thread when all succeeded or failed. Loop thread only.
    func runPipeline(
        _ kind: TransactionKind, targets: [Int], window: Int, maxAttempts: Int,
        completion: @escaping @Sendable (PipelineResult) -> Void
    ) {
        precondition(pipeline == nil && run == nil, "one pipeline or step at a time")
        let now = MonotonicClock.now()
        // 1 s, doubling, `maxAttempts` sends, and as long again for the last answer.
        let attempts = max(maxAttempts, 1)
        let schedule = RetransmissionSchedule(
            initialRTO: .seconds(1), transmissions: attempts, lastWaitMultiplier: 1 << min(attempts - 1, 20))
        for i in targets { allocations[i].turn.setRetransmission(schedule) }
        pipeline = Pipeline(
            kind: kind, targets: targets, window: max(window, 1),
            result: PipelineResult(kind: kind.name), startedAt: now, completion: completion)
        nextScan = now + .milliseconds(10)
        fillWindow(now)
        finishPipelineIfDone(now)
    }

    private func fillWindow(_ now: Timestamp) {
        while let p = pipeline, p.inflight.count < p.window, p.next < p.targets.count {
            let a = allocations[p.targets[p.next]]
            pipeline!.next += 1
            pipeline!.result.attempted += 1
            if begin(a, p.kind, now) {
                pipeline!.inflight.append(a.index)
                flush(a, now)
            } else {
                pipeline!.result.failed += 1
                pipeline!.result.errorCodes[-2, default: 0] += 1
            }
        }
    }

    private func finishPipelineIfDone(_ now: Timestamp) {
        guard let p = pipeline, p.inflight.isEmpty, p.next >= p.targets.count else { return }
        var result = p.result
        result.seconds = Double((now - p.startedAt).nanosecondsClamped) / 1e9
        pipeline = nil
        nextScan = now + .seconds(1)
        p.completion(result)
    }

    private func transactionFinished(_ a: ClientAllocation, ok: Bool, code: Int?, _ now: Timestamp) {
        a.busy = false
        guard var p = pipeline, let position = p.inflight.firstIndex(of: a.index) else { return }
        p.inflight.remove(at: position)
        let s0 = a.statsAtBegin, s1 = a.turn.stats
        p.result.retransmissions += Int(s1.retransmissions - s0.retransmissions)
        p.result.integrityFailures += Int(s1.unauthenticatedDropped - s0.unauthenticatedDropped)
        if p.kind == .allocate, let expected = config.realm, let realm = a.turn.realm, realm != expected {
            p.result.realmMismatch = realm
        }
        if ok {
            p.result.succeeded += 1
        } else {
            p.result.failed += 1
            p.result.errorCodes[code ?? 0, default: 0] += 1
        }
        pipeline = p
        fillWindow(now)
        finishPipelineIfDone(now)
    }

    /// Starts `kind` on `a`'s TURN client; false if it cannot be started.
    private func begin(_ a: ClientAllocation, _ kind: TransactionKind, _ now: Timestamp) -> Bool {
        a.statsAtBegin = a.turn.stats
        switch kind {
        case .allocate:
            switch a.turn.state {
            case .idle, .failed, .deallocated: a.turn.allocate(now: now)
            default: return false
            }
        case .bind:
            guard a.allocated else { return false }
            if config.transport == .sendIndication {
                a.turn.createPermission(for: config.peer.ip, now: now)
            } else {
                // The data path's prefix carries `channelNumber`: each client's first channel.
                guard a.turn.bindChannel(to: config.peer, now: now) == Self.channelNumber else { return false }
            }
        case .release:
            guard a.allocated else { return false }
            a.turn.deallocate(now: now)
        }
        a.busy = true
        return true
    }

    /// Sends what `a`'s TURN client queued and acts on its events.
    private func flush(_ a: ClientAllocation, _ now: Timestamp) {
        while let t = a.turn.pollTransmit() {
            _ = try? t.bytes.withUnsafeBytes { (b) throws(SystemError) in try a.socket.send(b, to: t.destination) }
        }
        while let e = a.turn.pollEvent() { event(e, on: a, now) }
    }

    /// Bench codes for failures: -1 no answer, else the STUN error code (0: a bad success response).
    private static func code(_ f: TURNFailure) -> Int {
        switch f {
        case .timeout, .expired: -1
        case .allocationMismatch: 437
        case .unauthenticated: 401
        case .staleNonce: 438
        case .error(let c): c
        case .badResponse: 0
        }
    }

    private func event(_ e: TURNClientEvent, on a: ClientAllocation, _ now: Timestamp) {
        let kind = a.busy ? pipeline?.kind : nil
        switch e {
        case .allocated:
            if kind == .allocate { transactionFinished(a, ok: true, code: nil, now) }
        case .allocationFailed(let f):
            if kind == .allocate { transactionFinished(a, ok: false, code: Self.code(f), now) }
        case .channelBound:
            guard config.transport != .sendIndication else { return }
            a.bound = true
            if kind == .bind { transactionFinished(a, ok: true, code: nil, now) }
        case .permissionCreated:
            guard config.transport == .sendIndication else { return }
            a.bound = true
            if kind == .bind { transactionFinished(a, ok: true, code: nil, now) }
        case .channelBindFailed(_, let f), .permissionFailed(_, let f):
            a.bound = false
            if kind == .bind { transactionFinished(a, ok: false, code: Self.code(f), now) }
        case .allocationLost(let f):
            a.bound = false
            if kind != nil { transactionFinished(a, ok: false, code: Self.code(f), now) }
        case .deallocated:
            a.bound = false
            // A release that got no answer ends deallocated too; count it as the timeout it was.
            let timedOut = a.turn.stats.transactionsTimedOut > a.statsAtBegin.transactionsTimedOut
            if kind == .release { transactionFinished(a, ok: !timedOut, code: timedOut ? -1 : nil, now) }
        case .refreshed:
            break
        }
    }

    private func control(_ a: ClientAllocation, _ bytes: UnsafeRawBufferPointer, from source: SocketAddress,
                         _ now: Timestamp) {
        _ = a.turn.handle(datagram: bytes, from: source, now: now)
        flush(a, now)
    }

    /// During a pipeline (every 10 ms): the in-flight clients' retransmissions and timeouts.
    /// Otherwise (every second): every client's refreshes.
    private func scan(_ now: Timestamp) {
        if let p = pipeline {
            nextScan = now + .milliseconds(10)
            for index in p.inflight {
                let a = allocations[index]
                if a.turn.nextDeadline <= now {
                    a.turn.handleTimeout(now: now)
                    flush(a, now)
                }
            }
            return
        }
        nextScan = now + .seconds(1)
        for a in allocations where a.turn.nextDeadline <= now {
            a.turn.handleTimeout(now: now)
            flush(a, now)
        }
    }

    // MARK: data path

    private final class StepRun {
        enum Phase { case warmup, measure, drain }
        let params: StepParams
        let windowStart: Timestamp
        let windowEnd: Timestamp
        var drainStart: Timestamp = .distantFuture
        var phase = Phase.warmup
        var lastTick: Timestamp
        var credit = 0.0
        var clipped = 0.0
        var sentInWindow: UInt64 = 0
        var droppedInWindow: UInt64 = 0
        var start: Snapshot?
        var end: Snapshot?
        let completion: @Sendable (StepResult) -> Void

        init(params: StepParams, now: Timestamp, completion: @escaping @Sendable (StepResult) -> Void) {
            self.params = params
            windowStart = now + .nanoseconds(Int64(params.warmup * 1e9))
            windowEnd = windowStart + .nanoseconds(Int64(params.duration * 1e9))
            lastTick = now
            self.completion = completion
        }
    }

    /// The clients taking part in steps: bound allocations, or every client in raw mode.
    func activate() {
        active = allocations.filter { config.transport == .raw || ($0.allocated && $0.bound) }
        roundRobin = 0
    }

    var activeCount: Int { active.count }

    /// Runs one fixed-rate step; `completion` runs on the loop thread. Loop thread only.
    func runStep(_ params: StepParams, completion: @escaping @Sendable (StepResult) -> Void) {
        precondition(pipeline == nil && run == nil, "one pipeline or step at a time")
        precondition(!active.isEmpty, "no active allocations")
        currentStep = params.id
        nextSequence = 0
        windowFirstSequence = .max
        receivedWindow = 0
        staleProbes = 0
        histogram.reset()
        run = StepRun(params: params, now: MonotonicClock.now(), completion: completion)
    }

    private func snapshot(_ now: Timestamp) -> Snapshot {
        let peerThread = peer.threadID.load(ordering: .relaxed)
        return Snapshot(
            wallNanoseconds: now.nanoseconds,
            serverCPU: config.serverPID.flatMap { ProcessStats.cpuTimes(pid: $0) },
            clientThreadNanoseconds: ProcessStats.threadCPUNanoseconds(pthread_self()),
            peerThreadNanoseconds: peerThread == 0 ? nil : ProcessStats.threadCPUNanoseconds(peerThread),
            clientProbes: clientProbes,
            peerReceived: peer.received.load(ordering: .relaxed),
            machineBusyMicroseconds: ProcessStats.machineBusyMicroseconds(),
            selfCPUMicroseconds: ProcessStats.cpuMicroseconds(pid: getpid()))
    }

    private func tick(_ run: StepRun, _ now: Timestamp) {
        if run.phase == .warmup, now >= run.windowStart {
            run.start = snapshot(now)
            histogram.reset()
            windowFirstSequence = nextSequence
            receivedWindow = 0
            run.phase = .measure
        }
        if run.phase == .measure, now >= run.windowEnd {
            run.end = snapshot(now)
            run.phase = .drain
            run.drainStart = now
        }
        if run.phase != .drain {
            let rate = run.params.rate
            run.credit += rate * Double(now.nanoseconds &- run.lastTick.nanoseconds) / 1e9
            // At most 5 ms of traffic at once: a generator that fell behind does not catch up in
            // one burst (which would measure the burst, not the rate); what it skips is reported.
            let cap = max(rate * 0.005, Double(config.burst))
            if run.credit > cap {
                if run.phase == .measure { run.clipped += run.credit - cap }
                run.credit = cap
            }
            let n = Int(run.credit)
            if n > 0 {
                run.credit -= Double(n)
                sendProbes(n, run)
            }
        } else if now.nanoseconds >= run.drainStart.nanoseconds &+ UInt64(run.params.drain * 1e9)
            || receivedWindow >= run.sentInWindow
        {
            finishStep(run, now)
            return
        }
        run.lastTick = now
    }

    private func sendProbes(_ count: Int, _ run: StepRun) {
        var remaining = count
        let header = UnsafeRawBufferPointer(start: scratch, count: prefixLength + Probe.size)
        let payload = UnsafeRawBufferPointer(start: filler, count: fillerLength)
        let probe = scratch + prefixLength
        let step = run.params.id
        let burst = config.burst
        let server = config.server
        while remaining > 0 {
            let a = active[roundRobin]
            roundRobin += 1
            if roundRobin == active.count { roundRobin = 0 }
            guard let queue = a.queue else { return }
            let k = min(remaining, burst)
            let sentAt = MonotonicClock.now().nanoseconds
            for _ in 0..<k {
                Probe.write(to: probe, step: step, sequence: nextSequence, sentAt: sentAt, allocation: UInt32(truncatingIfNeeded: a.index))
                nextSequence &+= 1
                _ = queue.enqueue(header: header, payload: payload, to: server)
            }
            let result = queue.flush(on: a.socket)
            if run.phase == .measure {
                run.sentInWindow &+= UInt64(result.sent)
                run.droppedInWindow &+= UInt64(result.dropped)
            }
            remaining -= k
        }
    }

    private func finishStep(_ run: StepRun, _ now: Timestamp) {
        self.run = nil
        currentStep = 0
        guard let s0 = run.start, let s1 = run.end else { return }
        let window = Double(s1.wallNanoseconds - s0.wallNanoseconds) / 1e9
        var serverCPU: Double?
        var serverUser: Double?
        if let a = s0.serverCPU, let b = s1.serverCPU {
            serverCPU = Double((b.user + b.system) &- (a.user + a.system))
            serverUser = Double(b.user &- a.user)
        }
        func cores(_ a: UInt64?, _ b: UInt64?) -> Double? {
            guard let a, let b, window > 0 else { return nil }
            return Double(b &- a) / 1e9 / window
        }
        var other: Double?
        if let m0 = s0.machineBusyMicroseconds, let m1 = s1.machineBusyMicroseconds,
            let b0 = s0.selfCPUMicroseconds, let b1 = s1.selfCPUMicroseconds, window > 0
        {
            let busy = Double(m1 &- m0) - Double(b1 &- b0) - (serverCPU ?? 0)
            other = max(busy, 0) / 1e6 / window
        }
        let result = StepResult(
            params: run.params, windowSeconds: window, sent: run.sentInWindow, received: receivedWindow,
            stale: staleProbes, sendDropped: run.droppedInWindow, clipped: run.clipped,
            relayed: (s1.clientProbes &- s0.clientProbes) &+ (s1.peerReceived &- s0.peerReceived),
            serverCPUMicroseconds: serverCPU, serverUserMicroseconds: serverUser,
            clientThreadCores: cores(s0.clientThreadNanoseconds, s1.clientThreadNanoseconds),
            peerThreadCores: cores(s0.peerThreadNanoseconds, s1.peerThreadNanoseconds),
            otherCores: other, latency: histogram, drainSeconds: Double(now.nanoseconds &- run.drainStart.nanoseconds) / 1e9)
        run.completion(result)
    }

    // MARK: time

    private func nextDeadline() -> Timestamp {
        if let run { return min(run.lastTick + .milliseconds(1), nextScan) }
        return nextScan
    }

    private func timeout(_ now: Timestamp) {
        if let run { tick(run, now) }
        if now >= nextScan { scan(now) }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
