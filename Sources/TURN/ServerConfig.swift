import FZCore
import STUN

/// An address the relay allocates relayed transport addresses on.
public struct RelayAddress: Sendable, Hashable {
    /// The local address relayed sockets are bound to.
    public var bind: IPAddress
    /// What clients are told (XOR-RELAYED-ADDRESS): the public address when the relay sits
    /// behind a 1:1 NAT (`--external-ip`), else `bind`.
    public var advertised: IPAddress

    public init(bind: IPAddress, advertised: IPAddress? = nil) {
        self.bind = bind
        self.advertised = advertised ?? bind
    }
}

/// Everything that shapes the TURN server's decisions. Defaults follow RFC 8656 and coturn.
public struct ServerConfig: Sendable {
    public var realm: String
    /// At most one per family is used: the first IPv4 and the first IPv6.
    public var relayAddresses: [RelayAddress]
    public var portRange: ClosedRange<UInt16> = 49152...65535
    /// RFC 8656 §7.2: default 10 minutes; lifetimes asked for are capped at `maxLifetime`.
    public var defaultLifetime: Duration = .seconds(600)
    public var maxLifetime: Duration = .seconds(3600)
    /// RFC 8656 §9: 300 s, not configurable by clients.
    public var permissionLifetime: Duration = .seconds(300)
    /// RFC 8656 §12: 10 minutes.
    public var channelLifetime: Duration = .seconds(600)
    /// RFC 8656 §12: a channel number or peer of an expired binding cannot be bound to anything
    /// else for 5 minutes, so late packets are not delivered to the wrong peer.
    public var channelCooldown: Duration = .seconds(300)
    /// RFC 8656 §7.2 (EVEN-PORT): a reserved port is kept about 30 seconds.
    public var reservationLifetime: Duration = .seconds(30)
    public var nonceLifetime: Duration = .seconds(600)
    /// Allocations one username may hold at once (486 beyond it); 0 = unlimited.
    public var userQuota: Int = 0
    /// Allocations the whole relay may hold (486 beyond it); 0 = unlimited.
    public var totalQuota: Int = 0
    /// Permissions one allocation may hold (508 beyond it).
    public var maxPermissionsPerAllocation: Int = 128
    /// Unauthenticated (401/438) replies per source IP: burst, then per second.
    public var unauthenticatedBurst: Double = 20
    public var unauthenticatedPerSecond: Double = 10
    /// SOFTWARE attribute in success responses; nil leaves it out.
    public var software: String? = "fz-relay"
    /// Attempts at a random free port before an Allocate fails with 508.
    public var portAttempts: Int = 64
    /// The largest Data indication the shell can send (it writes them into fixed-size send
    /// slots). A peer datagram without a channel whose indication would be larger is dropped and
    /// counted in `oversizeDropped`, as is one whose indication exceeds a STUN length field
    /// whatever this says.
    public var maxDataIndicationSize: Int = Message.headerSize + Message.maxBodyLength

    public init(realm: String, relayAddresses: [RelayAddress]) {
        self.realm = realm
        self.relayAddresses = relayAddresses
    }

    public func relayAddress(for family: AddressFamily) -> RelayAddress? {
        relayAddresses.first { $0.bind.family == family }
    }
}
