import FZControl
/// Round-robin over the online gateways of a site, independently per site.
///
/// The cursor is the last gateway chosen; the next choice is the first online gateway whose id
/// sorts after it (wrapping). So gateways joining or leaving never reset the rotation, and a
/// caller that serialises `select` (one actor or lock) spreads concurrent requests evenly.
public struct GatewaySelector: Sendable {
    private var lastChosen: [SiteID: GatewayID] = [:]

    public init() {}

    public mutating func select(site: SiteID, online: some Sequence<GatewayID>) -> GatewayID? {
        let candidates = Set(online).sorted()
        guard let first = candidates.first else { return nil }
        var choice = first
        if let last = lastChosen[site], let next = candidates.first(where: { $0 > last }) {
            choice = next
        }
        lastChosen[site] = choice
        return choice
    }
}
