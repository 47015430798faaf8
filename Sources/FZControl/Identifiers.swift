import FZCrypto

/// A typed identifier: `ID<Site>` and `ID<Resource>` cannot be mixed up, yet both are plain
/// strings on the wire and in storage (`site_3f9c…`).
public struct ID<Entity>: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public let rawValue: String

    public init(_ rawValue: String) { self.rawValue = rawValue }

    /// A fresh random identifier with a readable prefix (`site_`, `res_`, …).
    public static func random(prefix: String) -> Self {
        Self("\(prefix)_\(Hex.encode(SecureRandom.bytes(12)))")
    }

    public static func < (l: Self, r: Self) -> Bool { l.rawValue < r.rawValue }

    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// The tags that keep identifiers of different entities apart (the entities themselves live in
/// `Portal`; the identifiers travel on the control channel and so live here).
public enum IDKind {
    public enum Actor {}
    public enum Group {}
    public enum Site {}
    public enum Gateway {}
    public enum Resource {}
    public enum Policy {}
    public enum Client {}
    public enum Relay {}
    public enum Token {}
    public enum Request {}
}

public typealias ActorID = ID<IDKind.Actor>
public typealias GroupID = ID<IDKind.Group>
public typealias SiteID = ID<IDKind.Site>
public typealias GatewayID = ID<IDKind.Gateway>
public typealias ResourceID = ID<IDKind.Resource>
public typealias PolicyID = ID<IDKind.Policy>
public typealias ClientID = ID<IDKind.Client>
public typealias RelayID = ID<IDKind.Relay>
public typealias TokenID = ID<IDKind.Token>
/// One connection intent brokered to a gateway (`authorize` → `authorized`).
public typealias RequestID = ID<IDKind.Request>
