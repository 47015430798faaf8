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

public typealias ActorID = ID<PortalActor>
public typealias GroupID = ID<Group>
public typealias SiteID = ID<Site>
public typealias GatewayID = ID<Gateway>
public typealias ResourceID = ID<Resource>
public typealias PolicyID = ID<Policy>
public typealias ClientID = ID<Client>
public typealias RelayID = ID<Relay>
public typealias TokenID = ID<Token>
