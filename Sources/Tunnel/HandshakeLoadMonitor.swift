import FZCore

/// Decides when the gateway is "under load" (whitepaper §5.3), the state in which the WireGuard
/// core answers handshake messages without a valid MAC2 with a cookie reply, and rate-limits the
/// others per source, instead of spending a Curve25519 computation on each.
///
/// wireguard-go calls a device under load while its handshake queue is at least 1/8 full, and for
/// one second after. The data plane processes handshakes inline on its loop thread and has no
/// such queue, so it counts the work instead. The rule:
///
///   **Under load from the moment more than `threshold` handshake messages (initiations and
///   responses whose MAC1 is valid, i.e. that would cost a Curve25519 computation each) have
///   arrived within the last `window`, and until `hold` after the last message that found it so.**
///
/// Defaults: more than 16 in 100 ms (160/s sustained), held for 1 s. A legitimate peer sends at
/// most one initiation per REKEY_TIMEOUT (5 s) while it handshakes and one per two minutes
/// otherwise, so only thousands of peers handshaking at once, or a flood, get there. Messages with
/// a bad MAC1 cost one BLAKE2s and are not counted. Messages answered with a cookie reply are
/// counted, so a sustained flood keeps the gateway in cookie mode; one second after the rate falls
/// back to `threshold` per `window` or below, it leaves it.
///
/// Exact sliding window with fixed memory: a ring of the arrival times of the last `threshold`
/// messages. Pure: `now` is a parameter.
public struct HandshakeLoadMonitor: Sendable {
    public static let defaultThreshold = 16
    public static let defaultWindow: Duration = .milliseconds(100)
    public static let defaultHold: Duration = .seconds(1)

    public let threshold: Int
    public let window: Duration
    public let hold: Duration
    private let windowNanoseconds: UInt64
    private let holdNanoseconds: UInt64
    private var arrivals: [UInt64]
    private var next = 0
    private var recorded: UInt64 = 0
    /// Under load while `now < until`.
    public private(set) var until: Timestamp = .zero

    public init(threshold: Int = defaultThreshold, window: Duration = defaultWindow, hold: Duration = defaultHold) {
        precondition(threshold >= 1, "the load threshold must be at least 1")
        self.threshold = threshold
        self.window = window
        self.hold = hold
        windowNanoseconds = UInt64(max(0, window.nanosecondsClamped))
        holdNanoseconds = UInt64(max(0, hold.nanosecondsClamped))
        arrivals = [UInt64](repeating: 0, count: threshold)
    }

    /// Counts one handshake message that arrived at `now`; true if the gateway is under load
    /// (including because of this message).
    @discardableResult
    public mutating func record(now: Timestamp) -> Bool {
        let t = now.nanoseconds
        // The slot being overwritten holds the arrival `threshold` messages ago: if that was within
        // the window, so were the `threshold + 1` messages from it to this one.
        let oldest = arrivals[next]
        arrivals[next] = t
        next = next + 1 == arrivals.count ? 0 : next + 1
        recorded &+= 1
        if recorded > UInt64(threshold), t >= oldest, t - oldest < windowNanoseconds {
            until = Timestamp(nanoseconds: t &+ holdNanoseconds)
        }
        return isUnderLoad(now: now)
    }

    public func isUnderLoad(now: Timestamp) -> Bool { now < until }
}
