import FZControl
import FZCore

/// Something an admin manages access to. Belongs to exactly one site.
public struct Resource: Hashable, Sendable, Codable {
    /// More would be a policy nobody can read, and a gateway filter to evaluate per packet.
    public static let maxFilters = 64

    public var id: ResourceID
    public var siteId: SiteID
    public var name: String
    public var address: ResourceAddress
    /// Empty: all traffic. Otherwise only the listed protocols and ports.
    public var filters: [TrafficFilter]

    public init(id: ResourceID, siteId: SiteID, name: String, address: ResourceAddress, filters: [TrafficFilter] = []) {
        self.id = id
        self.siteId = siteId
        self.name = name
        self.address = address
        self.filters = filters
    }
}
