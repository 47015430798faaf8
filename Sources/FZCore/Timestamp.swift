/// A monotonic instant in nanoseconds. Protocol state machines take `now` as a parameter; each
/// daemon reads the clock in exactly one place and tests drive a manual clock.
public struct Timestamp: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static func seconds(_ s: Double) -> Timestamp { Timestamp(nanoseconds: UInt64(s * 1e9)) }

    public static let zero = Timestamp(nanoseconds: 0)
    /// Sorts after every real instant: "no deadline".
    public static let distantFuture = Timestamp(nanoseconds: .max)

    public static func < (l: Self, r: Self) -> Bool { l.nanoseconds < r.nanoseconds }

    public static func + (t: Timestamp, d: Duration) -> Timestamp {
        let ns = d.nanosecondsClamped
        if ns >= 0 {
            let (sum, overflow) = t.nanoseconds.addingReportingOverflow(UInt64(ns))
            return Timestamp(nanoseconds: overflow ? .max : sum)
        }
        let sub = UInt64(-ns)
        return Timestamp(nanoseconds: t.nanoseconds > sub ? t.nanoseconds - sub : 0)
    }

    public static func - (l: Timestamp, r: Timestamp) -> Duration {
        if l >= r { return .nanoseconds(Int64(clamping: l.nanoseconds - r.nanoseconds)) }
        return .nanoseconds(-Int64(clamping: r.nanoseconds - l.nanoseconds))
    }

    /// Whole seconds since the clock's origin (used for coarse timers and nonce epochs).
    public var seconds: UInt64 { nanoseconds / 1_000_000_000 }

    public var description: String { "t+\(Double(nanoseconds) / 1e9)s" }
}

extension Duration {
    /// The duration in nanoseconds, clamped to Int64.
    public var nanosecondsClamped: Int64 {
        let (s, atto) = components
        let (ns, o1) = s.multipliedReportingOverflow(by: 1_000_000_000)
        if o1 { return s < 0 ? .min : .max }
        let (sum, o2) = ns.addingReportingOverflow(atto / 1_000_000_000)
        if o2 { return s < 0 ? .min : .max }
        return sum
    }
}
