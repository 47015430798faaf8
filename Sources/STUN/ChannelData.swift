/// ChannelData messages (RFC 8656 §12.4): a 4-byte header (channel number, length) and the
/// application data, the compact alternative to Send/Data indications.
public enum ChannelData {
    public static let headerSize = 4
    /// The numbers a client may bind: RFC 5766's 0x4000-0x7FFF, which coturn's clients (and
    /// most deployed ones) use. Their first two bits are 01, which demultiplexes ChannelData from
    /// STUN (00) on the same socket. RFC 8656 §12 narrowed new bindings to `rfc8656Range` so
    /// that a socket shared with DTLS/RTP (RFC 7983) can tell them apart; a TURN listening
    /// socket carries neither, so a relay accepts the whole historical range.
    public static let channelRange: ClosedRange<UInt16> = 0x4000...0x7FFF
    /// RFC 8656 §12: the range clients should bind from (first byte 0x40-0x4F).
    public static let rfc8656Range: ClosedRange<UInt16> = 0x4000...0x4FFF

    /// The channel and the data length when `bytes` is one ChannelData message: a channel in
    /// range and a length that leaves either nothing or the padding to four bytes after the data
    /// (RFC 8656 §12.5: padding is mandatory over streams and optional over UDP). Nil otherwise.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> (channel: UInt16, length: Int)? {
        guard bytes.count >= headerSize else { return nil }
        let channel = bytes.be16(at: 0)
        guard channelRange.contains(channel) else { return nil }
        let length = Int(bytes.be16(at: 2))
        let rest = bytes.count - headerSize
        guard rest == length || rest == padded4(length) else { return nil }
        return (channel, length)
    }

    /// Writes the 4-byte header; `length` is the data length without padding (0...65535).
    public static func writeHeader(channel: UInt16, length: Int, to pointer: UnsafeMutableRawPointer) {
        precondition((0...0xFFFF).contains(length), "ChannelData length must fit 16 bits")
        pointer.storeBE16(channel, at: 0)
        pointer.storeBE16(UInt16(length), at: 2)
    }
}
