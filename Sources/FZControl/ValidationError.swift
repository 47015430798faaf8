/// Input that cannot become a domain value: names the offending field so the API can answer
/// `400 {"error": "invalid", "field": …}`.
public struct ValidationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var field: String
    public var reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { "\(field): \(reason)" }
}
