/// Message boundaries on a stream (TURN over TCP, RFC 8656 §3.1): the stream carries STUN
/// messages and ChannelData back to back, each delimited by its own header's length field.
/// ChannelData is padded to a multiple of four bytes on a stream (RFC 8656 §12.5); STUN message
/// lengths always are one. Nothing else may appear: a stream with anything else on it cannot be
/// resynchronised and is closed by the caller.
public enum StreamFraming {
    public enum Next: Equatable, Sendable {
        /// A whole message at the start of the buffer: `length` bytes are the message (a
        /// ChannelData message without its padding, ready for the datagram decoders), `wire`
        /// bytes (with padding) are consumed from the stream.
        case message(length: Int, wire: Int)
        /// The buffer holds the start of a message (or nothing): read more.
        case needMore
        /// The next message would take more than `maxWire` bytes on the wire (known from its
        /// header, before its body arrives).
        case tooLarge(wire: Int)
        /// Neither STUN (first two bits 00 and the magic cookie) nor ChannelData (01).
        case invalid
    }

    /// The largest message a stream can carry: a ChannelData header, 65,535 data bytes and padding
    /// (a STUN message is at most 20 + 65,532 bytes).
    public static let largestWire = ChannelData.headerSize + padded4(0xFFFF)

    /// Where the first message in `bytes` ends; reads only the headers.
    public static func next(_ bytes: UnsafeRawBufferPointer, maxWire: Int) -> Next {
        guard let first = bytes.first else { return .needMore }
        let length: Int
        let wire: Int
        switch first & 0xC0 {
        case 0x00:
            // The cookie at offset 4 tells STUN from garbage as soon as 8 bytes are in.
            guard bytes.count >= 8 else { return .needMore }
            guard bytes.be32(at: 4) == Message.magicCookie else { return .invalid }
            let body = Int(bytes.be16(at: 2))
            guard body % 4 == 0 else { return .invalid }
            length = Message.headerSize + body
            wire = length
        case 0x40:
            guard bytes.count >= ChannelData.headerSize else { return .needMore }
            let data = Int(bytes.be16(at: 2))
            length = ChannelData.headerSize + data
            wire = ChannelData.headerSize + padded4(data)
        default:
            return .invalid
        }
        guard wire <= maxWire else { return .tooLarge(wire: wire) }
        return bytes.count >= wire ? .message(length: length, wire: wire) : .needMore
    }
}
