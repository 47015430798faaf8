import FZCore

/// What a peer may reach through the tunnel: evaluated on every decrypted packet before it is
/// written to the TUN device (the gateway's enforcement of the portal's policy: a client gets
/// the resources it was authorized for, with their protocol and port filters, and nothing else).
///
/// A packet is allowed when some rule matches its destination address, protocol and, for TCP
/// and UDP, destination port. No rules: nothing is allowed. `allowAll` is the static-peer mode
/// (wg-quick semantics: AllowedIPs alone decides).
///
/// Fragments (decided here, as in stateless firewalls): the ports are only in the first
/// fragment. A first fragment too short to hold them is malformed (the "tiny fragment" attack,
/// RFC 1858). A later fragment is allowed when a rule matches its destination and protocol,
/// whatever that rule's ports: without the first fragment, which was checked, the receiving host
/// cannot reassemble it. An IPv4 TCP fragment at offset 1 (8 bytes), which could overwrite the
/// checked TCP header, is malformed (RFC 1858 §4).
///
/// Evaluation reads the header in place and never allocates: a scan of the rules (a peer has
/// few; a table by prefix, as `AllowedIPs`, is the step when some have hundreds).
public struct PacketFilter: Sendable, Equatable {
    public enum Protocols: Sendable, Equatable {
        /// Any IP protocol, any port.
        case any
        /// ICMP (IPv4) and ICMPv6.
        case icmp
        case tcp(ClosedRange<UInt16>)
        case udp(ClosedRange<UInt16>)

        public static let allPorts: ClosedRange<UInt16> = 0...UInt16.max
    }

    public struct Rule: Sendable, Equatable {
        public var destination: CIDR
        public var protocols: Protocols

        public init(destination: CIDR, protocols: Protocols = .any) {
            self.destination = destination
            self.protocols = protocols
        }
    }

    public enum Verdict: Sendable, Equatable {
        case allow
        /// No rule matches.
        case deny
        /// Not an IPv4/IPv6 packet whose headers this filter can read.
        case malformed
    }

    /// Nil: every packet is allowed.
    public let rules: [Rule]?

    public init(rules: [Rule]) { self.rules = rules }
    private init(allowingAll: Void) { rules = nil }

    public static let allowAll = PacketFilter(allowingAll: ())
    public static let denyAll = PacketFilter(rules: [])

    static let icmpV4: UInt8 = 1, tcp: UInt8 = 6, udp: UInt8 = 17, icmpV6: UInt8 = 58

    /// The verdict for a packet (IPv4 or IPv6 header first) by its destination, protocol and port.
    public func evaluate(_ packet: UnsafeRawBufferPointer) -> Verdict {
        guard let rules else { return .allow }
        guard let header = TransportHeader(packet) else { return .malformed }
        for rule in rules where rule.destination.contains(header.destination) {
            switch rule.protocols {
            case .any:
                return .allow
            case .icmp:
                if header.protocolNumber == Self.icmpV4 || header.protocolNumber == Self.icmpV6 { return .allow }
            case .tcp(let ports):
                if header.protocolNumber == Self.tcp, header.port.map(ports.contains) ?? true { return .allow }
            case .udp(let ports):
                if header.protocolNumber == Self.udp, header.port.map(ports.contains) ?? true { return .allow }
            }
        }
        return .deny
    }

    public func evaluate(_ packet: [UInt8]) -> Verdict { packet.withUnsafeBytes { evaluate($0) } }
}

/// The fields a filter needs: destination, the transport protocol (after IPv6 extension
/// headers), and the TCP/UDP destination port (nil in a non-first fragment).
struct TransportHeader {
    var destination: IPAddress
    var protocolNumber: UInt8
    var port: UInt16?

    init?(_ p: UnsafeRawBufferPointer) {
        guard p.count >= 1 else { return nil }
        var transportOffset: Int
        var firstFragment = true
        switch p[0] >> 4 {
        case 4:
            guard p.count >= 20 else { return nil }
            let headerLength = Int(p[0] & 0x0F) * 4
            guard headerLength >= 20, headerLength <= p.count else { return nil }
            destination = .v4(IPv4Address(p.be32(16)))
            protocolNumber = p[9]
            let fragmentOffset = p.be16(6) & 0x1FFF
            if fragmentOffset == 1, protocolNumber == PacketFilter.tcp { return nil }
            firstFragment = fragmentOffset == 0
            transportOffset = headerLength
        case 6:
            guard p.count >= 40 else { return nil }
            destination = .v6(IPv6Address(high: p.be64(24), low: p.be64(32)))
            var next = p[6]
            var offset = 40
            // Hop-by-hop, routing, fragment, destination options, AH: at most a few; bounded.
            var remaining = 8
            walk: while remaining > 0 {
                remaining -= 1
                switch next {
                case 0, 43, 60:
                    guard offset + 8 <= p.count else { return nil }
                    next = p[offset]
                    offset += (Int(p[offset + 1]) + 1) * 8
                case 44:
                    guard offset + 8 <= p.count else { return nil }
                    next = p[offset]
                    if p.be16(offset + 2) >> 3 != 0 { firstFragment = false }
                    offset += 8
                case 51:
                    guard offset + 8 <= p.count else { return nil }
                    next = p[offset]
                    offset += (Int(p[offset + 1]) + 2) * 4
                default:
                    break walk
                }
            }
            guard remaining > 0, offset <= p.count else { return nil }
            protocolNumber = next
            transportOffset = offset
        default:
            return nil
        }
        port = nil
        if firstFragment, protocolNumber == PacketFilter.tcp || protocolNumber == PacketFilter.udp {
            guard transportOffset + 4 <= p.count else { return nil }
            port = p.be16(transportOffset + 2)
        }
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always) func be16(_ offset: Int) -> UInt16 { UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    @inline(__always) func be32(_ offset: Int) -> UInt32 { UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    @inline(__always) func be64(_ offset: Int) -> UInt64 { UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
}
