import FZCore

/// A decoded STUN attribute (RFC 8489 §14, RFC 8656 §18, RFC 8445 §7.1).
///
/// Addresses are plain `SocketAddress` values: the XOR obfuscation of RFC 8489 §14.2 is applied
/// and removed by the codec, which knows the transaction ID. Types the codec does not know are
/// kept verbatim in `.unknown` so a server can list comprehension-required ones in
/// UNKNOWN-ATTRIBUTES.
public enum Attribute: Hashable, Sendable {
    // RFC 8489
    /// 0x0001 (§14.1).
    case mappedAddress(SocketAddress)
    /// 0x0006 (§14.3): UTF-8.
    case username(String)
    /// 0x0008 (§14.5): the 20-byte HMAC-SHA1.
    case messageIntegrity([UInt8])
    /// 0x0009 (§14.8).
    case errorCode(ErrorCode)
    /// 0x000A (§14.13): the comprehension-required types a request carried that were not understood.
    case unknownAttributes([UInt16])
    /// 0x0014 (§14.9).
    case realm(String)
    /// 0x0015 (§14.10).
    case nonce(String)
    /// 0x001C (§14.6): HMAC-SHA256, possibly truncated to 16...32 bytes in steps of four.
    case messageIntegritySHA256([UInt8])
    /// 0x001D (§14.12).
    case passwordAlgorithm(PasswordAlgorithm)
    /// 0x001E (§14.4): 32 bytes.
    case userhash([UInt8])
    /// 0x0020 (§14.2).
    case xorMappedAddress(SocketAddress)
    /// 0x8002 (§14.11).
    case passwordAlgorithms([PasswordAlgorithm])
    /// 0x8003 (§14.16): a DNS name.
    case alternateDomain(String)
    /// 0x8022 (§14.14).
    case software(String)
    /// 0x8023 (§14.15): not XOR-obfuscated.
    case alternateServer(SocketAddress)
    /// 0x8028 (§14.7): the value as on the wire (CRC-32 XOR 0x5354554E).
    case fingerprint(UInt32)
    // RFC 8656
    /// 0x000C (§18.1): number plus two RFFU bytes.
    case channelNumber(UInt16)
    /// 0x000D (§18.2): seconds.
    case lifetime(UInt32)
    /// 0x0012 (§18.3): may repeat.
    case xorPeerAddress(SocketAddress)
    /// 0x0013 (§18.4).
    case data([UInt8])
    /// 0x0016 (§18.5): repeats in a dual-stack allocation's response.
    case xorRelayedAddress(SocketAddress)
    /// 0x0017 (§18.6).
    case requestedAddressFamily(AddressFamily)
    /// 0x0018 (§18.7): the R bit asks to reserve the next higher port.
    case evenPort(reserve: Bool)
    /// 0x0019 (§18.8): an IANA protocol number (17 for UDP) plus three RFFU bytes.
    case requestedTransport(UInt8)
    /// 0x001A (§18.9): no value.
    case dontFragment
    /// 0x0022 (§18.10).
    case reservationToken(UInt64)
    /// 0x8000 (§18.11).
    case additionalAddressFamily(AddressFamily)
    /// 0x8001 (§18.12).
    case addressErrorCode(family: AddressFamily, ErrorCode)
    /// 0x8004 (§18.13).
    case icmp(type: UInt8, code: UInt8, data: UInt32)
    // RFC 8445
    /// 0x0024 (§7.1.1).
    case priority(UInt32)
    /// 0x0025 (§7.1.2): no value.
    case useCandidate
    /// 0x8029 (§7.1.3): tie-breaker.
    case iceControlled(UInt64)
    /// 0x802A (§7.1.3): tie-breaker.
    case iceControlling(UInt64)
    /// Any other type, value kept verbatim (without padding).
    case unknown(type: UInt16, value: [UInt8])

    /// The attribute type code.
    public var type: UInt16 {
        switch self {
        case .mappedAddress: AttributeType.mappedAddress
        case .username: AttributeType.username
        case .messageIntegrity: AttributeType.messageIntegrity
        case .errorCode: AttributeType.errorCode
        case .unknownAttributes: AttributeType.unknownAttributes
        case .realm: AttributeType.realm
        case .nonce: AttributeType.nonce
        case .messageIntegritySHA256: AttributeType.messageIntegritySHA256
        case .passwordAlgorithm: AttributeType.passwordAlgorithm
        case .userhash: AttributeType.userhash
        case .xorMappedAddress: AttributeType.xorMappedAddress
        case .passwordAlgorithms: AttributeType.passwordAlgorithms
        case .alternateDomain: AttributeType.alternateDomain
        case .software: AttributeType.software
        case .alternateServer: AttributeType.alternateServer
        case .fingerprint: AttributeType.fingerprint
        case .channelNumber: AttributeType.channelNumber
        case .lifetime: AttributeType.lifetime
        case .xorPeerAddress: AttributeType.xorPeerAddress
        case .data: AttributeType.data
        case .xorRelayedAddress: AttributeType.xorRelayedAddress
        case .requestedAddressFamily: AttributeType.requestedAddressFamily
        case .evenPort: AttributeType.evenPort
        case .requestedTransport: AttributeType.requestedTransport
        case .dontFragment: AttributeType.dontFragment
        case .reservationToken: AttributeType.reservationToken
        case .additionalAddressFamily: AttributeType.additionalAddressFamily
        case .addressErrorCode: AttributeType.addressErrorCode
        case .icmp: AttributeType.icmp
        case .priority: AttributeType.priority
        case .useCandidate: AttributeType.useCandidate
        case .iceControlled: AttributeType.iceControlled
        case .iceControlling: AttributeType.iceControlling
        case .unknown(let type, _): type
        }
    }

    /// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT: computed over the message
    /// that precedes them, so the encoder writes them itself and never copies them from `attributes`.
    var isTrailer: Bool {
        let t = type
        return t == AttributeType.messageIntegrity || t == AttributeType.messageIntegritySHA256
            || t == AttributeType.fingerprint
    }
}
