import FZCore

/// A clock that moves only when a test says so: every state machine takes `now` as a
/// parameter, and tests advance time explicitly instead of sleeping.
public struct ManualClock: Sendable {
    public private(set) var now: Timestamp

    public init(start: Timestamp = .seconds(1_000)) { now = start }

    public mutating func advance(by d: Duration) { now = now + d }

    public mutating func advance(seconds s: Double) { now = now + .nanoseconds(Int64(s * 1e9)) }
}
