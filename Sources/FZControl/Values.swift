import FZCore
import FZCrypto

/// ICE username fragment and password of one side.
public struct IceCredentials: Codable, Sendable, Hashable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// RFC 8445: ufrag ≥ 4 characters, password ≥ 22 characters (here 8 and 32 hex digits).
    public static func random() -> IceCredentials {
        IceCredentials(username: Hex.encode(SecureRandom.bytes(4)), password: Hex.encode(SecureRandom.bytes(16)))
    }
}

/// Both sides' ICE credentials, sent identically to the client and the gateway: each side uses
/// its own locally and the other's for its checks.
public struct IcePair: Codable, Sendable, Hashable {
    public var client: IceCredentials
    public var gateway: IceCredentials

    public init(client: IceCredentials, gateway: IceCredentials) {
        self.client = client
        self.gateway = gateway
    }
}

/// A WireGuard preshared key: 32 bytes, base64 on the wire. Never printed.
public struct PresharedKey: Hashable, Sendable, Codable, CustomStringConvertible {
    public let base64: String

    public init(base64 text: String) throws(ValidationError) {
        guard let bytes = Base64.decode(text), bytes.count == 32 else {
            throw ValidationError(field: "preshared_key", reason: "not base64 of 32 bytes")
        }
        base64 = Base64.encode(bytes)
    }

    public static func random() -> PresharedKey {
        // 32 random bytes always make a valid key.
        try! PresharedKey(base64: Base64.encode(SecureRandom.bytes(32)))
    }

    public var bytes: [UInt8] { Base64.decode(base64) ?? [] }

    public var description: String { "<preshared key>" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(base64: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.reason))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(base64)
    }
}

/// A secret string on the wire (the deployment's TURN secret): encoded as itself, never printed.
public struct Secret: Hashable, Sendable, Codable, CustomStringConvertible {
    public let value: String

    public init(_ value: String) { self.value = value }

    public var description: String { "<secret>" }

    public init(from decoder: any Decoder) throws { value = try decoder.singleValueContainer().decode(String.self) }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value)
    }
}

/// A resource as peers see it.
public struct ResourceView: Codable, Sendable, Hashable {
    public var id: ResourceID
    public var siteId: SiteID
    public var name: String
    public var address: ResourceAddress
    public var filters: [TrafficFilter]

    public init(id: ResourceID, siteId: SiteID, name: String, address: ResourceAddress, filters: [TrafficFilter]) {
        self.id = id
        self.siteId = siteId
        self.name = name
        self.address = address
        self.filters = filters
    }
}

/// A relay with TURN REST credentials minted for the recipient.
public struct RelayView: Codable, Sendable, Hashable {
    public var id: RelayID
    public var name: String
    public var region: String
    /// `IP:PORT` / `[IPv6]:PORT`, as the relay announced them.
    public var addresses: [String]
    public var username: String
    public var password: String
    public var expiresAt: UnixTime

    public init(id: RelayID, name: String, region: String, addresses: [String], username: String, password: String, expiresAt: UnixTime) {
        self.id = id
        self.name = name
        self.region = region
        self.addresses = addresses
        self.username = username
        self.password = password
        self.expiresAt = expiresAt
    }

    /// The announced addresses that parse (all of them, for a relay the portal registered).
    public var socketAddresses: [SocketAddress] { addresses.compactMap { SocketAddress($0) } }
}

/// A client's tunnel addresses, stable across reconnects.
public struct TunnelAddresses: Codable, Sendable, Hashable {
    public var ipv4: IPv4Address
    public var ipv6: IPv6Address

    public init(ipv4: IPv4Address, ipv6: IPv6Address) {
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }
}
