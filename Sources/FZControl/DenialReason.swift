/// Why access was refused; the control channel sends these names to the client.
public enum DenialReason: String, Sendable, Hashable, Codable {
    /// No policy grants the client's actor this resource under the current conditions.
    case forbidden
    /// The resource does not exist.
    case notFound = "not_found"
    /// The resource exists and is allowed, but no gateway of its site is online.
    case offline
}
