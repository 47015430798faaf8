import Histogram

/// The outcome of one batch of transactions (allocations, binds or releases) run with a window.
struct PipelineResult: Sendable {
    var kind: String
    var attempted = 0
    var succeeded = 0
    var failed = 0
    var retransmissions = 0
    /// STUN error code → count; -1 counts transactions that timed out, -2 sends that failed.
    var errorCodes: [Int: Int] = [:]
    var integrityFailures = 0
    /// The realm the server announced when it differs from `--realm`.
    var realmMismatch: String?
    var seconds = 0.0

    var perSecond: Double { seconds > 0 ? Double(succeeded) / seconds : 0 }

    var json: JSON {
        var o = JSON()
        o["attempted"] = .int(attempted)
        o["succeeded"] = .int(succeeded)
        o["failed"] = .int(failed)
        o["seconds"] = .double(seconds, 3)
        o["per_s"] = .double(perSecond, 1)
        o["retransmissions"] = .int(retransmissions)
        if !errorCodes.isEmpty {
            var e = JSON()
            for (code, count) in errorCodes.sorted(by: { $0.key < $1.key }) {
                e[code == -1 ? "timeout" : code == -2 ? "send_error" : String(code)] = .int(count)
            }
            o["errors"] = .object(e)
        }
        if integrityFailures > 0 { o["integrity_failures"] = .int(integrityFailures) }
        if let realmMismatch { o["server_realm"] = .string(realmMismatch) }
        return o
    }
}

/// What one fixed-rate step asks for.
struct StepParams: Sendable {
    var id: UInt32
    /// Offered echo round trips per second, across all allocations.
    var rate: Double
    var warmup: Double
    var duration: Double
    var drain: Double
}

/// Counters read at the edges of the measurement window.
struct Snapshot: Sendable {
    var wallNanoseconds: UInt64
    var serverCPU: (user: UInt64, system: UInt64)?
    var clientThreadNanoseconds: UInt64?
    var peerThreadNanoseconds: UInt64?
    /// Echoes received by the clients (any step): datagrams the server relayed peer → client.
    var clientProbes: UInt64
    /// Datagrams received by the peer: datagrams the server relayed client → peer.
    var peerReceived: UInt64
    var machineBusyMicroseconds: UInt64?
    var selfCPUMicroseconds: UInt64?
}

/// The measurements of one step. Loss and latency concern the echoes *sent* inside the window
/// (their returns are awaited through the drain); relayed datagrams and CPU time are whatever
/// happened *during* the window.
struct StepResult: Sendable {
    var params: StepParams
    var windowSeconds: Double
    var sent: UInt64
    var received: UInt64
    var stale: UInt64
    var sendDropped: UInt64
    /// Echoes the pacer could not send in time (the generator fell behind by more than 5 ms).
    var clipped: Double
    var relayed: UInt64
    var serverCPUMicroseconds: Double?
    /// The part of `serverCPUMicroseconds` spent in the server's own code (utime); the rest is stime.
    var serverUserMicroseconds: Double?
    var clientThreadCores: Double?
    var peerThreadCores: Double?
    /// Cores busy with anything but the server and this process during the window (other users'
    /// builds, say): the noise indicator. Tick resolution (10 ms per CPU).
    var otherCores: Double?
    /// Other load stayed above --max-other-load through every retry.
    var noisy = false
    var latency: Histogram<UInt64>
    var drainSeconds: Double

    var lost: UInt64 { sent > received ? sent - received : 0 }
    var lossRatio: Double { sent > 0 ? Double(lost) / Double(sent) : 1 }
    var achievedRate: Double { windowSeconds > 0 ? Double(sent) / windowSeconds : 0 }
    var relayedPerSecond: Double { windowSeconds > 0 ? Double(relayed) / windowSeconds : 0 }
    var cpuPerRelayed: Double? {
        guard let cpu = serverCPUMicroseconds, relayed > 0 else { return nil }
        return cpu / Double(relayed)
    }
    var serverCores: Double? { serverCPUMicroseconds.map { $0 / 1e6 / windowSeconds } }
    var userPerRelayed: Double? {
        guard let user = serverUserMicroseconds, relayed > 0 else { return nil }
        return user / Double(relayed)
    }
    /// Microseconds.
    func percentile(_ p: Double) -> Double {
        latency.totalCount == 0 ? 0 : Double(latency.valueAtPercentile(p)) / 1000
    }
    var maxLatency: Double { latency.totalCount == 0 ? 0 : Double(latency.max) / 1000 }

    /// The generator delivered the offered rate (within 2 %).
    var generatorKeptUp: Bool { achievedRate >= params.rate * 0.98 }

    /// "Loss-free" as the search uses it (see docs/performance.md): the generator sent the offered
    /// rate, at most `maxLoss` of the window's echoes were missing after the drain, and p99 stayed
    /// under `maxP99` microseconds (a standing queue in the server shows up there long before its
    /// socket buffer overflows).
    func passes(maxLoss: Double, maxP99: Double) -> Bool {
        generatorKeptUp && lossRatio <= maxLoss && percentile(99) <= maxP99
    }

    func json(maxLoss: Double, maxP99: Double) -> JSON {
        var o = JSON()
        o["offered_rate"] = .double(params.rate, 0)
        o["achieved_rate"] = .double(achievedRate, 0)
        o["window_s"] = .double(windowSeconds, 3)
        o["sent"] = .int(Int(sent))
        o["received"] = .int(Int(received))
        o["lost"] = .int(Int(lost))
        o["loss_ratio"] = .double(lossRatio, 7)
        o["stale"] = .int(Int(stale))
        o["send_dropped"] = .int(Int(sendDropped))
        o["relayed"] = .int(Int(relayed))
        o["relayed_per_s"] = .double(relayedPerSecond, 0)
        var l = JSON()
        l["p50"] = .double(percentile(50), 1)
        l["p99"] = .double(percentile(99), 1)
        l["p999"] = .double(percentile(99.9), 1)
        l["max"] = .double(maxLatency, 1)
        o["latency_us"] = .object(l)
        o["server_cpu_us"] = serverCPUMicroseconds.map { .double($0, 0) } ?? .null
        o["server_cpu_cores"] = serverCores.map { .double($0, 3) } ?? .null
        o["cpu_us_per_relayed"] = cpuPerRelayed.map { .double($0, 3) } ?? .null
        o["user_us_per_relayed"] = userPerRelayed.map { .double($0, 3) } ?? .null
        o["system_us_per_relayed"] = cpuPerRelayed.flatMap { c in userPerRelayed.map { .double(c - $0, 3) } } ?? .null
        var b = JSON()
        b["client_thread_cores"] = clientThreadCores.map { .double($0, 3) } ?? .null
        b["peer_thread_cores"] = peerThreadCores.map { .double($0, 3) } ?? .null
        b["clipped"] = .double(clipped, 0)
        o["other_load_cores"] = otherCores.map { .double($0, 3) } ?? .null
        o["noisy"] = .bool(noisy)
        o["generator"] = .object(b)
        o["generator_kept_up"] = .bool(generatorKeptUp)
        o["loss_free"] = .bool(passes(maxLoss: maxLoss, maxP99: maxP99))
        return o
    }

    var summary: String {
        let cpu = cpuPerRelayed.map { "\(fmt($0, 2)) us/relayed" } ?? "cpu n/a"
        let cores = serverCores.map { " (server \(fmt($0 * 100, 0)) % of a core)" } ?? ""
        return "offered \(fmt(params.rate, 0))/s achieved \(fmt(achievedRate, 0))/s, lost \(lost)/\(sent) "
            + "(\(fmt(lossRatio * 100, 4)) %), relayed \(fmt(relayedPerSecond, 0))/s, p50 \(fmt(percentile(50), 1)) us "
            + "p99 \(fmt(percentile(99), 1)) us, \(cpu)\(cores), generator client \(fmt((clientThreadCores ?? 0) * 100, 0)) % "
            + "peer \(fmt((peerThreadCores ?? 0) * 100, 0)) %" + (otherCores.map { ", other load \(fmt($0 * 100, 0)) %" } ?? "")
    }
}

// MARK: a minimal JSON writer (one line, keys in insertion order)

struct JSON {
    enum Value {
        case int(Int)
        case double(Double, Int)
        case string(String)
        case bool(Bool)
        case object(JSON)
        case array([Value])
        case null
    }

    private var fields: [(String, Value)] = []

    subscript(key: String) -> Value? {
        get { fields.first { $0.0 == key }?.1 }
        set {
            fields.removeAll { $0.0 == key }
            if let newValue { fields.append((key, newValue)) }
        }
    }

    var text: String {
        "{" + fields.map { "\(Self.quote($0.0)):\(Self.render($0.1))" }.joined(separator: ",") + "}"
    }

    static func render(_ v: Value) -> String {
        switch v {
        case .int(let i): String(i)
        case .double(let d, let decimals): d.isFinite ? fmt(d, decimals) : "null"
        case .string(let s): quote(s)
        case .bool(let b): b ? "true" : "false"
        case .object(let o): o.text
        case .array(let a): "[" + a.map(render).joined(separator: ",") + "]"
        case .null: "null"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default:
                if c.value < 0x20 {
                    let hex = String(c.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        return out + "\""
    }
}

/// `v` with exactly `decimals` digits after the point (no Foundation).
func fmt(_ v: Double, _ decimals: Int) -> String {
    guard v.isFinite else { return "nan" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(v) * scale).rounded()
    guard scaled < 9e18 else { return String(v) }
    let n = UInt64(scaled)
    let whole = n / UInt64(scale)
    let fraction = n % UInt64(scale)
    var s = (v < 0 && n != 0 ? "-" : "") + String(whole)
    if decimals > 0 {
        let f = String(fraction)
        s += "." + String(repeating: "0", count: decimals - f.count) + f
    }
    return s
}
