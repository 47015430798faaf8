import FZControl
import FZCore

/// A device of an actor. Its tunnel addresses are assigned once, at first registration, and kept
/// for as long as the client exists (gateways and DNS records may refer to them).
public struct Client: Hashable, Sendable, Codable {
    public var id: ClientID
    public var actorId: ActorID
    public var name: String
    public var publicKey: WireGuardKey
    public var ipv4: IPv4Address
    public var ipv6: IPv6Address

    public init(id: ClientID, actorId: ActorID, name: String, publicKey: WireGuardKey, ipv4: IPv4Address, ipv6: IPv6Address) {
        self.id = id
        self.actorId = actorId
        self.name = name
        self.publicKey = publicKey
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }

    enum CodingKeys: String, CodingKey { case id, actorId, name, publicKey, ipv4, ipv6 }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(ClientID.self, forKey: .id)
        actorId = try c.decode(ActorID.self, forKey: .actorId)
        name = try c.decode(String.self, forKey: .name)
        publicKey = try c.decode(WireGuardKey.self, forKey: .publicKey)
        guard let v4 = IPv4Address(try c.decode(String.self, forKey: .ipv4)) else {
            throw DecodingError.dataCorruptedError(forKey: .ipv4, in: c, debugDescription: "not an IPv4 address")
        }
        guard let v6 = IPv6Address(try c.decode(String.self, forKey: .ipv6)) else {
            throw DecodingError.dataCorruptedError(forKey: .ipv6, in: c, debugDescription: "not an IPv6 address")
        }
        ipv4 = v4
        ipv6 = v6
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(actorId, forKey: .actorId)
        try c.encode(name, forKey: .name)
        try c.encode(publicKey, forKey: .publicKey)
        try c.encode(ipv4.description, forKey: .ipv4)
        try c.encode(ipv6.description, forKey: .ipv6)
    }
}
