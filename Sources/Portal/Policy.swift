import FZControl
import FZCore

/// Grants one group access to one resource, optionally only under conditions.
public struct Policy: Hashable, Sendable, Codable {
    public var id: PolicyID
    public var groupId: GroupID
    public var resourceId: ResourceID
    public var conditions: PolicyConditions

    public init(id: PolicyID, groupId: GroupID, resourceId: ResourceID, conditions: PolicyConditions = PolicyConditions()) {
        self.id = id
        self.groupId = groupId
        self.resourceId = resourceId
        self.conditions = conditions
    }
}

/// All present conditions must hold (absent ones always hold).
public struct PolicyConditions: Hashable, Sendable, Codable {
    /// The client's source address (as the portal sees it) must be inside one of these.
    public var sourceCidrs: [CIDR]?
    /// The request must fall inside this UTC window.
    public var timeWindow: TimeWindow?

    public init(sourceCidrs: [CIDR]? = nil, timeWindow: TimeWindow? = nil) {
        self.sourceCidrs = sourceCidrs
        self.timeWindow = timeWindow
    }

    public func hold(source: IPAddress?, now: UnixTime) -> Bool {
        if let cidrs = sourceCidrs {
            guard let source else { return false }
            let candidates = [source] + (source.embeddedIPv4.map { [IPAddress.v4($0)] } ?? [])
            guard candidates.contains(where: { ip in cidrs.contains { $0.contains(ip) } }) else { return false }
        }
        if let window = timeWindow, !window.contains(now) { return false }
        return true
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case sourceCidrs, timeWindow }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let texts = try c.decodeIfPresent([String].self, forKey: .sourceCidrs) {
            // An empty list would never grant, yet list the resource to clients: refuse it.
            guard !texts.isEmpty else {
                throw DecodingError.dataCorruptedError(
                    forKey: .sourceCidrs, in: c, debugDescription: "must list at least one CIDR (omit it for any source)")
            }
            sourceCidrs = try texts.map { t in
                guard let cidr = CIDR(t) else {
                    throw DecodingError.dataCorruptedError(forKey: .sourceCidrs, in: c, debugDescription: "not a CIDR: \(t)")
                }
                return cidr
            }
        }
        timeWindow = try c.decodeIfPresent(TimeWindow.self, forKey: .timeWindow)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(sourceCidrs?.map(\.description), forKey: .sourceCidrs)
        try c.encodeIfPresent(timeWindow, forKey: .timeWindow)
    }
}

/// A window of the day on some days of the week, in UTC: `{"days": ["mon"], "start": "08:00",
/// "end": "18:00"}`. `start < end`; a window across midnight is two policies. No days: every day.
public struct TimeWindow: Hashable, Sendable, Codable {
    public var days: Set<Weekday>
    /// Minutes since midnight, inclusive.
    public var startMinute: Int
    /// Minutes since midnight, exclusive (1440 = end of day).
    public var endMinute: Int

    public init(days: Set<Weekday> = [], startMinute: Int, endMinute: Int) throws(ValidationError) {
        guard (0..<1440).contains(startMinute), (1...1440).contains(endMinute), startMinute < endMinute else {
            throw ValidationError(field: "time_window", reason: "start must be before end, within 00:00-24:00")
        }
        self.days = days
        self.startMinute = startMinute
        self.endMinute = endMinute
    }

    public func contains(_ t: UnixTime) -> Bool {
        if !days.isEmpty && !days.contains(t.weekday) { return false }
        let m = t.minuteOfDay
        return m >= startMinute && m < endMinute
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case days, start, end }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let days = try c.decodeIfPresent([Weekday].self, forKey: .days) ?? []
        guard let s = Self.minutes(try c.decode(String.self, forKey: .start)) else {
            throw DecodingError.dataCorruptedError(forKey: .start, in: c, debugDescription: "expected HH:MM")
        }
        guard let e = Self.minutes(try c.decode(String.self, forKey: .end)) else {
            throw DecodingError.dataCorruptedError(forKey: .end, in: c, debugDescription: "expected HH:MM")
        }
        do { try self.init(days: Set(days), startMinute: s, endMinute: e) } catch {
            throw DecodingError.dataCorruptedError(forKey: .end, in: c, debugDescription: error.reason)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if !days.isEmpty { try c.encode(Weekday.allCases.filter(days.contains), forKey: .days) }
        try c.encode(Self.text(startMinute), forKey: .start)
        try c.encode(Self.text(endMinute), forKey: .end)
    }

    /// `HH:MM` → minutes; `24:00` allowed as the end of day.
    static func minutes(_ text: String) -> Int? {
        let p = text.split(separator: ":", omittingEmptySubsequences: false)
        guard p.count == 2, p[0].count == 2, p[1].count == 2, let h = Int(p[0]), let m = Int(p[1]),
              (0...24).contains(h), (0..<60).contains(m), h < 24 || m == 0 else { return nil }
        return h * 60 + m
    }

    static func text(_ minutes: Int) -> String {
        let h = minutes / 60, m = minutes % 60
        return (h < 10 ? "0" : "") + "\(h):" + (m < 10 ? "0" : "") + "\(m)"
    }
}
