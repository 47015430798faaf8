/// Attribute type codes from the IANA "STUN Attributes" registry. Types below 0x8000 are
/// comprehension-required: a receiver that does not know one must reject the request with 420
/// (RFC 8489 §14, §6.3.1).
public enum AttributeType {
    // RFC 8489 §18.3
    public static let mappedAddress: UInt16 = 0x0001
    public static let username: UInt16 = 0x0006
    public static let messageIntegrity: UInt16 = 0x0008
    public static let errorCode: UInt16 = 0x0009
    public static let unknownAttributes: UInt16 = 0x000A
    public static let realm: UInt16 = 0x0014
    public static let nonce: UInt16 = 0x0015
    public static let messageIntegritySHA256: UInt16 = 0x001C
    public static let passwordAlgorithm: UInt16 = 0x001D
    public static let userhash: UInt16 = 0x001E
    public static let xorMappedAddress: UInt16 = 0x0020
    public static let passwordAlgorithms: UInt16 = 0x8002
    public static let alternateDomain: UInt16 = 0x8003
    public static let software: UInt16 = 0x8022
    public static let alternateServer: UInt16 = 0x8023
    public static let fingerprint: UInt16 = 0x8028
    // RFC 8656 §18
    public static let channelNumber: UInt16 = 0x000C
    public static let lifetime: UInt16 = 0x000D
    public static let xorPeerAddress: UInt16 = 0x0012
    public static let data: UInt16 = 0x0013
    public static let xorRelayedAddress: UInt16 = 0x0016
    public static let requestedAddressFamily: UInt16 = 0x0017
    public static let evenPort: UInt16 = 0x0018
    public static let requestedTransport: UInt16 = 0x0019
    public static let dontFragment: UInt16 = 0x001A
    public static let reservationToken: UInt16 = 0x0022
    public static let additionalAddressFamily: UInt16 = 0x8000
    public static let addressErrorCode: UInt16 = 0x8001
    public static let icmp: UInt16 = 0x8004
    // RFC 8445 §16.1
    public static let priority: UInt16 = 0x0024
    public static let useCandidate: UInt16 = 0x0025
    public static let iceControlled: UInt16 = 0x8029
    public static let iceControlling: UInt16 = 0x802A

    /// True for types below 0x8000, which a receiver must understand (RFC 8489 §14).
    public static func isComprehensionRequired(_ type: UInt16) -> Bool { type < 0x8000 }

    /// Whether the codec parses `type` into an attribute of its own (`Attribute.decode`), rather
    /// than keeping it as `.unknown`; a test holds the two lists together.
    static func isKnown(_ type: UInt16) -> Bool {
        switch type {
        case mappedAddress, username, messageIntegrity, errorCode, unknownAttributes, realm, nonce,
            messageIntegritySHA256, passwordAlgorithm, userhash, xorMappedAddress, passwordAlgorithms,
            alternateDomain, software, alternateServer, fingerprint,
            channelNumber, lifetime, xorPeerAddress, data, xorRelayedAddress, requestedAddressFamily, evenPort,
            requestedTransport, dontFragment, reservationToken, additionalAddressFamily, addressErrorCode, icmp,
            priority, useCandidate, iceControlled, iceControlling:
            true
        default:
            false
        }
    }
}
