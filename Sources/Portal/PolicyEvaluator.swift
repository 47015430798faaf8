import FZControl
import FZCore

public enum PolicyDecision: Sendable, Hashable {
    /// Allowed by this policy (the first matching one, by id, so the choice is stable).
    case allowed(PolicyID)
    case denied(DenialReason)
}

/// Decides whether an actor may reach a resource now. Pure: the caller supplies the actor's
/// groups, the policies of the resource, the source address and the time.
public enum PolicyEvaluator {
    public static func evaluate(
        resource: ResourceID, actorGroups: Set<GroupID>, source: IPAddress?, now: UnixTime, policies: [Policy]
    ) -> PolicyDecision {
        let granting = policies
            .filter { $0.resourceId == resource && actorGroups.contains($0.groupId) }
            .sorted { $0.id < $1.id }
        for p in granting where p.conditions.hold(source: source, now: now) {
            return .allowed(p.id)
        }
        return .denied(.forbidden)
    }
}
