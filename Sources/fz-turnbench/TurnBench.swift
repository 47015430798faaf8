import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import FZCore
import FZLinux
import Synchronization

/// `fz-turnbench`: a standard TURN client load generator that drives any TURN server (fz-relay,
/// coturn) or, with `--raw`, an fz-forwarder. See docs/performance.md.
@main
struct TurnBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fz-turnbench",
        abstract: "Measure a TURN server on loopback: loss-free relay rate, latency, CPU per relayed datagram, memory per allocation.",
        discussion: """
            Each allocation is a client with its own UDP socket: Allocate (401, then authenticated; 438 retried), \
            then ChannelBind (or CreatePermission with --send-indications) to an echo peer that runs in this \
            process. Payloads carry a sequence number and a send timestamp; the peer echoes them back through \
            the server, so every echo is two relayed datagrams (client→peer, peer→client).

            Modes: --rate PPS (one fixed-rate step), --search (highest loss-free rate), --idle-allocations N \
            (setup rate and, with --server-pid, resident memory per allocation). --raw skips TURN and sends \
            ChannelData frames on channel 0x4000 to an fz-forwarder.

            "Loss-free": the generator achieved ≥ 98 % of the offered rate, at most --max-loss of the echoes \
            sent in the measurement window were missing after the drain, and their p99 round trip stayed \
            under --max-p99-ms (a growing queue in the server).

            Output: one JSON line on stdout; progress and a human summary on stderr. Loopback addresses only.
            """)

    @Option(help: ArgumentHelp("The TURN server (or fz-forwarder with --raw).", valueName: "ip:port"))
    var server: String

    @Option(help: "TURN username.")
    var user = "bench"

    @Option(help: "TURN password.")
    var password = "bench"

    @Option(help: "Expected realm (the one the server announces in its 401 is used; a different one is reported).")
    var realm: String?

    @Option(help: "Allocations (clients, each with its own socket) carrying traffic.")
    var allocations = 64

    @Flag(help: "Send indications / Data indications instead of ChannelBind + ChannelData.")
    var sendIndications = false

    @Flag(help: "No TURN: ChannelData frames (channel 0x4000) straight to an fz-forwarder, which must forward to --peer.")
    var raw = false

    @Option(help: ArgumentHelp("Address of the in-process echo peer (default: loopback, any port; --raw needs a fixed port).", valueName: "ip:port"))
    var peer: String?

    @Option(help: "Payload bytes per datagram as the peer sees it (28...1400).")
    var size = 100

    @Option(help: "Offered echo round trips per second across all allocations (one fixed-rate step).")
    var rate: Double?

    @Option(help: "Measurement window of a --rate step, seconds.")
    var duration = 5.0

    @Option(help: "Traffic before each window starts, seconds.")
    var warmup = 1.0

    @Option(help: "Longest wait for the window's echoes after sending stops, seconds.")
    var drain = 1.0

    @Flag(help: "Search the highest loss-free rate: step up by --search-factor until a step fails, then bisect.")
    var search = false

    @Option(help: "First rate of the search (echoes/s).")
    var searchStart = 5000.0

    @Option(help: "Highest rate the search tries (echoes/s).")
    var searchMax = 2_000_000.0

    @Option(help: "Rate multiplier while stepping up.")
    var searchFactor = 1.6

    @Option(help: "Stop bisecting when (fail - pass) / pass is below this.")
    var searchPrecision = 0.05

    @Option(help: "Measurement window of each search step, seconds.")
    var stepDuration = 2.0

    @Option(help: "Most steps a search runs.")
    var searchSteps = 16

    @Option(help: "Largest lost fraction that still counts as loss-free (0.0001 = 0.01 %).")
    var maxLoss = 0.0001

    @Option(name: .customLong("max-p99-ms"), help: "Largest p99 round trip that still counts as loss-free, milliseconds.")
    var maxP99Ms = 10.0

    @Option(help: "Other load (cores busy with neither the server nor this process) above which a step counts as noisy and is run again.")
    var maxOtherLoad = 0.15

    @Option(help: "Times a noisy step is run again (after a 2 s pause) before its result is taken anyway, flagged noisy.")
    var noisyRetries = 3

    @Option(help: "Before each step, wait up to this many seconds for the machine to be idle (busy below --max-other-load); 0 = don't.")
    var quietWait = 0.0

    @Option(help: "Datagrams per client socket per sendmmsg.")
    var burst = 8

    @Flag(inversion: .prefixedNo, help: ArgumentHelp(
        "Client and echo-peer sockets send with UDP GSO (a burst to one address is one segmented message) and read with UDP GRO, as wireguard-go, quinn (Firezone's connlib) and Tailscale do; --no-offload sends and reads one datagram per message, as browsers' WebRTC stacks do. Servers see the same datagrams either way."))
    var offload = true

    @Option(help: ArgumentHelp("The server's process id: its CPU time (/proc/PID/stat) and memory (/proc/PID/status) are measured.", valueName: "pid"))
    var serverPid: Int32?

    @Option(help: ArgumentHelp("Create N allocations with one channel each and hold them: setup rate and memory per allocation.", valueName: "n"))
    var idleAllocations: Int?

    @Option(help: "Seconds to hold idle allocations before reading the server's memory.")
    var hold = 2.0

    @Option(help: "Transactions in flight at once while setting up or releasing allocations.")
    var setupWindow = 128

    @Option(help: ArgumentHelp(
        "Local ports for the client sockets, taken in order (ports in use are skipped). Default: ephemeral ports. Give a range outside the server's relay port range for large --idle-allocations, and a different one for each run (a server may keep a released 5-tuple for a while and answer 437).",
        valueName: "lo-hi"))
    var clientPorts: String?

    @Flag(help: "Leave the allocations in place at exit (default: Refresh with LIFETIME 0).")
    var noRelease = false

    @Option(help: "A name for the server in the output (e.g. fz-relay, coturn).")
    var label: String?

    func validate() throws {
        guard (Probe.size...1400).contains(size) else { throw ValidationError("--size must be \(Probe.size)...1400") }
        guard allocations > 0 else { throw ValidationError("--allocations must be positive") }
        guard (1...64).contains(burst) else { throw ValidationError("--burst must be 1...64") }
        if raw && sendIndications { throw ValidationError("--raw and --send-indications exclude each other") }
        if idleAllocations != nil && raw { throw ValidationError("--idle-allocations needs a TURN server, not --raw") }
        if let n = idleAllocations, n <= 0 { throw ValidationError("--idle-allocations must be positive") }
        if idleAllocations == nil && rate == nil && !search { throw ValidationError("give --rate, --search or --idle-allocations") }
        if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
        guard searchFactor > 1, searchPrecision > 0, searchStart > 0 else { throw ValidationError("bad search parameters") }
        _ = try Self.loopback(server, "--server")
        if let peer { _ = try Self.loopback(peer, "--peer") }
        if raw && (peer == nil || (try? Self.loopback(peer!, "--peer"))?.port == 0) {
            throw ValidationError("--raw needs --peer ip:port (the address the fz-forwarder forwards to)")
        }
        if let clientPorts { _ = try Self.portRange(clientPorts) }
    }

    static func loopback(_ text: String, _ flag: String) throws -> SocketAddress {
        guard let address = SocketAddress(text) else { throw ValidationError("\(flag): expected ip:port or [ipv6]:port, got \(text)") }
        let isLoopback = switch address.ip {
        case .v4(let a): a.value >> 24 == 127
        case .v6(let a): a == IPv6Address.loopback
        }
        guard isLoopback else { throw ValidationError("\(flag): only loopback addresses (127.0.0.0/8, ::1) are allowed") }
        return address
    }

    static func portRange(_ text: String) throws -> ClosedRange<Int> {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let lo = Int(parts[0]), let hi = Int(parts[1]), 1 <= lo, lo <= hi, hi <= 65535 else {
            throw ValidationError("--client-ports: expected LO-HI, got \(text)")
        }
        return lo...hi
    }

    func run() throws {
        let serverAddress = try Self.loopback(server, "--server")
        let transport: Transport = raw ? .raw : sendIndications ? .sendIndication : .channel
        let peerAddress: SocketAddress
        if let peer {
            peerAddress = try Self.loopback(peer, "--peer")
        } else {
            peerAddress = switch serverAddress.ip {
            case .v4: SocketAddress(IPv4Address.loopback, 0)
            case .v6: SocketAddress(IPv6Address.loopback, 0)
            }
        }
        let count = idleAllocations ?? allocations
        let limit = ResourceLimits.raiseOpenFilesToHardLimit()
        guard UInt64(count) + 64 <= limit else {
            throw BenchError("\(count) client sockets need more descriptors than the limit of \(limit) (ulimit -n)")
        }

        let echo = try EchoPeer(bindingTo: peerAddress, offload: offload)
        try echo.start()
        let config = BenchClient.Config(
            server: serverAddress, peer: echo.address, transport: transport, size: size, username: user,
            password: password, realm: realm, burst: burst, serverPID: serverPid, dataPath: idleAllocations == nil, offload: offload)
        let client = try BenchClient(config: config, count: count, ports: try clientPorts.map(Self.portRange), peer: echo)
        try client.start()
        defer {
            client.stop()
            echo.stop()
        }

        var out = JSON()
        out["tool"] = .string("fz-turnbench")
        if let label { out["label"] = .string(label) }
        out["mode"] = .string(idleAllocations != nil ? "idle" : search ? "search" : "rate")
        out["server"] = .string(serverAddress.description)
        out["peer"] = .string(echo.address.description)
        out["transport"] = .string(transport.rawValue)
        out["size"] = .int(size)
        out["allocations"] = .int(count)
        if let serverPid {
            out["server_pid"] = .int(Int(serverPid))
            out["server_comm"] = ProcessStats.commandName(pid: serverPid).map { .string($0) } ?? .null
        }

        if idleAllocations != nil {
            try runIdle(client, &out)
        } else {
            try runTraffic(client, echo, &out)
        }
        if !noRelease && transport != .raw {
            let release = releaseAll(client)
            out["release"] = .object(release.json)
        }
        emit(out)
    }

    // MARK: modes

    private func setUp(_ client: BenchClient, into out: inout JSON) throws -> (PipelineResult, PipelineResult) {
        let count = client.allocations.count
        let window = setupWindow
        log("setting up \(count) allocations (\(client.config.transport == .sendIndication ? "CreatePermission" : "ChannelBind") to \(client.config.peer))")
        let allocate = try onLoop(client, timeout: 900) { (c, done: @escaping @Sendable (PipelineResult) -> Void) in
            c.runPipeline(.allocate, targets: Array(0..<count), window: window, maxAttempts: 5, completion: done)
        }
        let allocated = try onLoop(client, timeout: 30) { (c, done: @escaping @Sendable ([Int]) -> Void) in
            done(c.allocations.filter(\.allocated).map(\.index))
        }
        let bind = try onLoop(client, timeout: 900) { (c, done: @escaping @Sendable (PipelineResult) -> Void) in
            c.runPipeline(.bind, targets: allocated, window: window, maxAttempts: 5, completion: done)
        }
        var setup = JSON()
        setup["allocate"] = .object(allocate.json)
        setup["bind"] = .object(bind.json)
        out["setup"] = .object(setup)
        log("allocations: \(allocate.succeeded)/\(count) in \(fmt(allocate.seconds, 2)) s (\(fmt(allocate.perSecond, 0))/s), "
            + "binds: \(bind.succeeded) in \(fmt(bind.seconds, 2)) s" + (allocate.failed + bind.failed > 0 ? ", errors \(allocate.json["errors"].map { JSON.render($0) } ?? "") \(bind.json["errors"].map { JSON.render($0) } ?? "")" : ""))
        if let realm = allocate.realmMismatch { log("note: the server's realm is \(realm), not \(self.realm ?? "")") }
        return (allocate, bind)
    }

    private func runIdle(_ client: BenchClient, _ out: inout JSON) throws {
        let clientThread = try onLoop(client, timeout: 10) { (_, done: @escaping @Sendable (UInt) -> Void) in done(pthread_self()) }
        let rssBefore = serverPid.flatMap { ProcessStats.residentKiB(pid: $0) }
        let cpuBefore = serverPid.flatMap { ProcessStats.cpuMicroseconds(pid: $0) }
        let clientCPUBefore = ProcessStats.threadCPUNanoseconds(clientThread)
        let (allocate, bind) = try setUp(client, into: &out)
        let cpuAfter = serverPid.flatMap { ProcessStats.cpuMicroseconds(pid: $0) }
        let clientCPUAfter = ProcessStats.threadCPUNanoseconds(clientThread)
        log("holding for \(fmt(hold, 1)) s")
        usleep(UInt32(hold * 1e6))
        let rssAfter = serverPid.flatMap { ProcessStats.residentKiB(pid: $0) }

        var idle = JSON()
        idle["allocated"] = .int(allocate.succeeded)
        idle["bound"] = .int(bind.succeeded)
        idle["allocations_per_s"] = .double(allocate.perSecond, 1)
        idle["binds_per_s"] = .double(bind.perSecond, 1)
        let setupSeconds = allocate.seconds + bind.seconds
        if let a = cpuBefore, let b = cpuAfter, allocate.succeeded > 0 {
            idle["server_cpu_us_per_allocation"] = .double(Double(b - a) / Double(allocate.succeeded), 1)
            idle["server_cpu_cores_during_setup"] = .double(Double(b - a) / 1e6 / max(setupSeconds, 1e-9), 3)
        }
        if let a = clientCPUBefore, let b = clientCPUAfter {
            idle["client_thread_cores_during_setup"] = .double(Double(b - a) / 1e9 / max(setupSeconds, 1e-9), 3)
        }
        if let rssBefore, let rssAfter {
            idle["server_rss_kib_before"] = .int(Int(rssBefore))
            idle["server_rss_kib_after"] = .int(Int(rssAfter))
            if bind.succeeded > 0 {
                idle["kib_per_allocation"] = .double((Double(rssAfter) - Double(rssBefore)) / Double(bind.succeeded), 2)
            }
        }
        out["idle"] = .object(idle)
        var line = "idle: \(allocate.succeeded) allocations at \(fmt(allocate.perSecond, 0))/s, \(bind.succeeded) channels at \(fmt(bind.perSecond, 0))/s"
        if let rssBefore, let rssAfter, bind.succeeded > 0 {
            line += "; server RSS \(rssBefore) -> \(rssAfter) KiB = \(fmt((Double(rssAfter) - Double(rssBefore)) / Double(bind.succeeded), 2)) KiB/allocation"
        }
        log(line)
    }

    private func runTraffic(_ client: BenchClient, _ echo: EchoPeer, _ out: inout JSON) throws {
        if client.config.transport != .raw {
            let (_, bind) = try setUp(client, into: &out)
            guard bind.succeeded > 0 else {
                emit(out)
                throw BenchError("no allocation could be set up (see \"setup\" above)")
            }
        }
        let active = try onLoop(client, timeout: 10) { (c, done: @escaping @Sendable (Int) -> Void) in
            c.activate()
            done(c.activeCount)
        }
        out["active"] = .int(active)
        var criteria = JSON()
        criteria["max_loss"] = .double(maxLoss, 6)
        criteria["max_p99_us"] = .double(maxP99Ms * 1000, 0)
        criteria["drain_s"] = .double(drain, 2)
        out["criteria"] = .object(criteria)
        let maxP99 = maxP99Ms * 1000

        var nextID: UInt32 = 1
        var noisyRuns = 0
        /// One step; run again while other work shared the machine (see --max-other-load).
        func step(_ rate: Double, _ seconds: Double) throws -> StepResult {
            var attempt = 0
            while true {
                waitForQuiet()
                let params = StepParams(id: nextID, rate: rate, warmup: warmup, duration: seconds, drain: drain)
                nextID += 1
                var result = try onLoop(client, timeout: warmup + seconds + drain + 60) { (c, done: @escaping @Sendable (StepResult) -> Void) in
                    c.runStep(params, completion: done)
                }
                usleep(200_000)  // let queues empty before the next step
                guard let other = result.otherCores, other > maxOtherLoad else { return result }
                noisyRuns += 1
                if attempt >= noisyRetries {
                    result.noisy = true
                    return result
                }
                attempt += 1
                log("  noisy step at \(fmt(rate, 0))/s (other load \(fmt(other * 100, 0)) % of a core): again in 2 s")
                usleep(2_000_000)
            }
        }
        defer { out["noisy_runs"] = .int(noisyRuns) }

        guard search else {
            let r = try step(rate!, duration)
            out["result"] = .object(r.json(maxLoss: maxLoss, maxP99: maxP99))
            log("\(label ?? server) \(client.config.transport.rawValue) \(size) B: \(r.summary)")
            return
        }

        var steps: [StepResult] = []
        var best: StepResult?
        var firstFail: StepResult?
        func trial(_ rate: Double) throws -> Bool {
            let r = try step(rate, stepDuration)
            steps.append(r)
            let ok = r.passes(maxLoss: maxLoss, maxP99: maxP99)
            log("  step \(steps.count): \(ok ? "pass" : "FAIL") \(r.summary)")
            if ok {
                if best == nil || r.params.rate > best!.params.rate { best = r }
            } else if firstFail == nil || r.params.rate < firstFail!.params.rate {
                firstFail = r
            }
            return ok
        }
        log("searching the highest loss-free rate from \(fmt(searchStart, 0)) echoes/s")
        var r = searchStart
        // Up until a step fails...
        while r <= searchMax && steps.count < searchSteps {
            if try !trial(r) { break }
            r *= searchFactor
        }
        // ...or down until one passes...
        if best == nil {
            r = searchStart / searchFactor
            while r >= 100 && steps.count < searchSteps {
                if try trial(r) { break }
                r /= searchFactor
            }
        }
        // ...then bisect between the best pass and the lowest fail above it.
        while let lo = best, let hi = firstFail, hi.params.rate > lo.params.rate,
            (hi.params.rate - lo.params.rate) / lo.params.rate > searchPrecision, steps.count < searchSteps
        {
            _ = try trial((lo.params.rate + hi.params.rate) / 2)
        }

        var s = JSON()
        s["loss_free_rate"] = best.map { .double($0.params.rate, 0) } ?? .null
        s["loss_free_relayed_per_s"] = best.map { .double($0.relayedPerSecond, 0) } ?? .null
        if let hi = firstFail {
            s["first_failing_rate"] = .double(hi.params.rate, 0)
            s["limited_by"] = .string(
                !hi.generatorKeptUp ? "generator" : hi.lossRatio > maxLoss ? "loss" : "latency")
        }
        s["steps"] = .array(steps.map { st in
            var o = JSON()
            o["rate"] = .double(st.params.rate, 0)
            o["pass"] = .bool(st.passes(maxLoss: maxLoss, maxP99: maxP99))
            o["achieved"] = .double(st.achievedRate, 0)
            o["loss_ratio"] = .double(st.lossRatio, 7)
            o["p99_us"] = .double(st.percentile(99), 1)
            o["cpu_us_per_relayed"] = st.cpuPerRelayed.map { .double($0, 3) } ?? .null
            o["user_us_per_relayed"] = st.userPerRelayed.map { .double($0, 3) } ?? .null
            o["server_cpu_cores"] = st.serverCores.map { .double($0, 3) } ?? .null
            o["client_thread_cores"] = st.clientThreadCores.map { .double($0, 3) } ?? .null
            o["peer_thread_cores"] = st.peerThreadCores.map { .double($0, 3) } ?? .null
            o["other_load_cores"] = st.otherCores.map { .double($0, 3) } ?? .null
            if st.noisy { o["noisy"] = .bool(true) }
            return .object(o)
        })
        out["search"] = .object(s)
        out["result"] = best.map { .object($0.json(maxLoss: maxLoss, maxP99: maxP99)) } ?? .null
        if let best {
            log("\(label ?? server) \(client.config.transport.rawValue) \(size) B: loss-free up to \(fmt(best.params.rate, 0)) echoes/s "
                + "= \(fmt(best.relayedPerSecond, 0)) relayed datagrams/s" + (firstFail.map { " (fails at \(fmt($0.params.rate, 0)): \(s["limited_by"].map { JSON.render($0) } ?? ""))" } ?? ""))
        } else {
            log("\(label ?? server): no loss-free rate found")
        }
    }

    /// Samples the machine's busy time for 0.5 s at a time until it is below --max-other-load
    /// cores (nothing of ours runs between steps) or --quiet-wait seconds have passed.
    private func waitForQuiet() {
        guard quietWait > 0 else { return }
        let deadline = MonotonicClock.now() + .nanoseconds(Int64(quietWait * 1e9))
        var said = false
        while MonotonicClock.now() < deadline {
            guard let b0 = ProcessStats.machineBusyMicroseconds() else { return }
            usleep(500_000)
            guard let b1 = ProcessStats.machineBusyMicroseconds() else { return }
            let cores = Double(b1 &- b0) / 0.5e6
            if cores <= maxOtherLoad { return }
            if !said {
                log("  waiting for other load (\(fmt(cores * 100, 0)) % of a core) to settle")
                said = true
            }
        }
    }

    private func releaseAll(_ client: BenchClient) -> PipelineResult {
        let window = setupWindow
        do {
            let targets = try onLoop(client, timeout: 10) { (c, done: @escaping @Sendable ([Int]) -> Void) in
                done(c.allocations.filter(\.allocated).map(\.index))
            }
            return try onLoop(client, timeout: 120) { (c, done: @escaping @Sendable (PipelineResult) -> Void) in
                c.runPipeline(.release, targets: targets, window: window, maxAttempts: 2, completion: done)
            }
        } catch {
            return PipelineResult(kind: "release")
        }
    }
}

// MARK: talking to the loop thread

/// A value handed from the loop thread to the waiting main thread.
final class Mailbox<T: Sendable>: Sendable {
    private let slot = Mutex<T?>(nil)

    func put(_ value: T) { slot.withLock { $0 = value } }

    /// Polls every 2 ms (the main thread does nothing else meanwhile).
    func take(timeout: Double) -> T? {
        let deadline = MonotonicClock.now() + .nanoseconds(Int64(timeout * 1e9))
        while MonotonicClock.now() < deadline {
            if let value = slot.withLock({ $0 }) { return value }
            usleep(2000)
        }
        return nil
    }
}

/// Runs `body` on the client's loop thread and waits for the value it hands to `done`.
func onLoop<T: Sendable>(
    _ client: BenchClient, timeout: Double,
    _ body: @escaping @Sendable (BenchClient, @escaping @Sendable (T) -> Void) -> Void
) throws -> T {
    let box = Mailbox<T>()
    client.loop.execute { body(client) { box.put($0) } }
    guard let value = box.take(timeout: timeout) else { throw BenchError("timed out after \(fmt(timeout, 0)) s waiting for the client loop") }
    return value
}

/// The JSON line, on stdout, written at once (not buffered behind the stderr lines).
func emit(_ json: JSON) {
    var text = json.text + "\n"
    text.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

func log(_ line: String) {
    var text = "fz-turnbench: \(line)\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
