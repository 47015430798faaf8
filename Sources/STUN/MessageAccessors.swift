import FZCore

/// Typed views of `attributes`: the first occurrence for singular names, every occurrence for
/// plural ones.
extension Message {
    /// The first attribute `pick` maps to a value.
    @inline(__always)
    func first<T>(_ pick: (Attribute) -> T?) -> T? {
        for attribute in attributes {
            if let value = pick(attribute) { return value }
        }
        return nil
    }

    /// Whether an attribute of `type` is present.
    public func contains(_ type: UInt16) -> Bool { attributes.contains { $0.type == type } }

    public var mappedAddress: SocketAddress? { first { if case .mappedAddress(let v) = $0 { v } else { nil } } }
    public var xorMappedAddress: SocketAddress? { first { if case .xorMappedAddress(let v) = $0 { v } else { nil } } }
    public var alternateServer: SocketAddress? { first { if case .alternateServer(let v) = $0 { v } else { nil } } }
    public var alternateDomain: String? { first { if case .alternateDomain(let v) = $0 { v } else { nil } } }
    public var username: String? { first { if case .username(let v) = $0 { v } else { nil } } }
    public var userhash: [UInt8]? { first { if case .userhash(let v) = $0 { v } else { nil } } }
    public var realm: String? { first { if case .realm(let v) = $0 { v } else { nil } } }
    public var nonce: String? { first { if case .nonce(let v) = $0 { v } else { nil } } }
    public var software: String? { first { if case .software(let v) = $0 { v } else { nil } } }
    public var errorCode: ErrorCode? { first { if case .errorCode(let v) = $0 { v } else { nil } } }
    public var unknownAttributes: [UInt16]? { first { if case .unknownAttributes(let v) = $0 { v } else { nil } } }
    public var passwordAlgorithm: PasswordAlgorithm? {
        first { if case .passwordAlgorithm(let v) = $0 { v } else { nil } }
    }
    public var passwordAlgorithms: [PasswordAlgorithm]? {
        first { if case .passwordAlgorithms(let v) = $0 { v } else { nil } }
    }
    /// The MESSAGE-INTEGRITY value, if present (verify with `checkIntegrity(key:)`).
    public var messageIntegrity: [UInt8]? { first { if case .messageIntegrity(let v) = $0 { v } else { nil } } }
    public var messageIntegritySHA256: [UInt8]? {
        first { if case .messageIntegritySHA256(let v) = $0 { v } else { nil } }
    }
    /// The FINGERPRINT value; a decoded message only has one if it was correct.
    public var fingerprint: UInt32? { first { if case .fingerprint(let v) = $0 { v } else { nil } } }
    public var hasFingerprint: Bool { fingerprint != nil }
    public var hasMessageIntegrity: Bool { messageIntegrity != nil || messageIntegritySHA256 != nil }

    // RFC 8656
    public var channelNumber: UInt16? { first { if case .channelNumber(let v) = $0 { v } else { nil } } }
    public var lifetime: UInt32? { first { if case .lifetime(let v) = $0 { v } else { nil } } }
    public var data: [UInt8]? { first { if case .data(let v) = $0 { v } else { nil } } }
    public var xorPeerAddresses: [SocketAddress] {
        attributes.compactMap { if case .xorPeerAddress(let v) = $0 { v } else { nil } }
    }
    public var xorRelayedAddresses: [SocketAddress] {
        attributes.compactMap { if case .xorRelayedAddress(let v) = $0 { v } else { nil } }
    }
    public var requestedAddressFamily: AddressFamily? {
        first { if case .requestedAddressFamily(let v) = $0 { v } else { nil } }
    }
    public var additionalAddressFamily: AddressFamily? {
        first { if case .additionalAddressFamily(let v) = $0 { v } else { nil } }
    }
    /// The R flag of EVEN-PORT, nil when the attribute is absent.
    public var evenPort: Bool? { first { if case .evenPort(let v) = $0 { v } else { nil } } }
    public var requestedTransport: UInt8? { first { if case .requestedTransport(let v) = $0 { v } else { nil } } }
    public var dontFragment: Bool { attributes.contains(.dontFragment) }
    public var reservationToken: UInt64? { first { if case .reservationToken(let v) = $0 { v } else { nil } } }
    public var addressErrorCodes: [(family: AddressFamily, code: ErrorCode)] {
        attributes.compactMap { if case .addressErrorCode(let f, let c) = $0 { (f, c) } else { nil } }
    }
    public var icmp: (type: UInt8, code: UInt8, data: UInt32)? {
        first { if case .icmp(let t, let c, let d) = $0 { (t, c, d) } else { nil } }
    }

    // RFC 8445
    public var priority: UInt32? { first { if case .priority(let v) = $0 { v } else { nil } } }
    public var useCandidate: Bool { attributes.contains(.useCandidate) }
    public var iceControlled: UInt64? { first { if case .iceControlled(let v) = $0 { v } else { nil } } }
    public var iceControlling: UInt64? { first { if case .iceControlling(let v) = $0 { v } else { nil } } }
}
