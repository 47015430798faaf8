/// What a datagram on a shared relay socket is, before any parsing.
public enum PacketKind: Sendable {
    case stun, channelData, other

    /// Demultiplexing by the first byte (RFC 7983 §7, RFC 8656 §12): 0-3 is STUN when the magic
    /// cookie sits at offset 4 and a whole header is there; 0x40-0x7F (channel numbers
    /// 0x4000-0x7FFF, see `ChannelData.channelRange`) is ChannelData when its 4-byte header is there. Everything else (WireGuard's types 1-4 lack the cookie) is other.
    public static func classify(_ bytes: UnsafeRawBufferPointer) -> PacketKind {
        guard let first = bytes.first else { return .other }
        if first < 4 {
            return bytes.count >= Message.headerSize && bytes.be32(at: 4) == Message.magicCookie ? .stun : .other
        }
        if first & 0xC0 == 0x40 {
            return bytes.count >= ChannelData.headerSize ? .channelData : .other
        }
        return .other
    }
}
