/// `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h): the 10 bytes a TUN device opened with
/// `IFF_VNET_HDR` puts in front of every packet it reads and expects in front of every packet
/// written to it. With `TUNSETOFFLOAD` (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`) the kernel may hand
/// over TCP segments of up to 64 KiB with only the pseudo-header checksum filled in, and accepts
/// such segments back; this header says which.
///
/// The multi-byte fields are little-endian: TUN uses the legacy virtio byte order, the host's
/// (`tun_is_little_endian`, drivers/net/tun.c), unless `TUNSETVNETLE`/`TUNSETVNETBE` say otherwise,
/// and every host this runs on is little-endian.
public struct VirtioNetHeader: Equatable, Sendable {
    public static let size = 10

    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `checksumStart + checksumOffset` holds only the
    /// pseudo-header sum; the one's-complement sum from `checksumStart` to the end completes it.
    public static let needsChecksum: UInt8 = 1
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum has already been verified.
    public static let dataValid: UInt8 = 2

    /// `VIRTIO_NET_HDR_GSO_*`: what kind of segment this is and how to cut it.
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoUDPL4: UInt8 = 5
    /// `VIRTIO_NET_HDR_GSO_ECN`, OR'd into a TCP type: the segment carries CWR.
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8
    public var gsoType: UInt8
    /// `hdr_len`: bytes of headers before the payload. Only a hint; the kernel does not check it on
    /// the way out, so readers derive the header length from the packet itself.
    public var headerLength: UInt16
    /// `gso_size`: payload bytes per segment once cut.
    public var gsoSize: UInt16
    /// `csum_start`: offset of the transport header from the start of the IP packet.
    public var checksumStart: UInt16
    /// `csum_offset`: offset of the checksum field from `checksumStart` (16 for TCP, 6 for UDP).
    public var checksumOffset: UInt16

    public init(
        flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
        checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0
    ) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// A complete packet with a valid checksum and nothing to cut.
    public static let none = VirtioNetHeader()

    /// Decodes the first 10 bytes; nil if there are fewer.
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.size else { return nil }
        flags = bytes[0]
        gsoType = bytes[1]
        headerLength = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    /// Encodes exactly `size` bytes at `pointer` (no alignment needed).
    public func write(to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: flags, as: UInt8.self)
        pointer.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        pointer.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        pointer.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        pointer.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        pointer.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }
}
