/// Wall-clock time in whole seconds since 1970-01-01T00:00:00Z. Policies with time windows,
/// token expiry and TURN REST usernames need calendar time, not the monotonic `Timestamp`; like
/// every `now` in this package it is a parameter, read from the clock by the daemon only.
public struct UnixTime: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public var seconds: Int64

    public init(seconds: Int64) { self.seconds = seconds }

    public static func < (l: Self, r: Self) -> Bool { l.seconds < r.seconds }

    public static func + (t: Self, d: Duration) -> Self { Self(seconds: t.seconds &+ d.components.seconds) }

    /// ISO weekday in UTC: Monday = 1 … Sunday = 7 (1970-01-01 was a Thursday).
    public var weekday: Weekday {
        let days = Self.floorDiv(seconds, 86_400)
        let index = Self.floorMod(days + 3, 7)  // 0 = Monday
        return Weekday.allCases[Int(index)]
    }

    /// Minutes since midnight UTC (0…1439).
    public var minuteOfDay: Int { Int(Self.floorMod(seconds, 86_400) / 60) }

    public var description: String { "\(seconds)" }

    public init(from decoder: any Decoder) throws { seconds = try decoder.singleValueContainer().decode(Int64.self) }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(seconds)
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }
    static func floorMod(_ a: Int64, _ b: Int64) -> Int64 { a - floorDiv(a, b) * b }
}

public enum Weekday: String, Sendable, Hashable, Codable, CaseIterable {
    case monday = "mon", tuesday = "tue", wednesday = "wed", thursday = "thu", friday = "fri"
    case saturday = "sat", sunday = "sun"
}
