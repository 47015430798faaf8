import FZCore
import STUN

/// The data path: no queueing, no events; ChannelData costs no allocation.
extension TURNClient {
    /// Bytes in front of a payload that `frameChannelData` needs.
    public static let channelDataHeadroom = ChannelData.headerSize

    /// Writes the ChannelData header (RFC 8656 §12.4) for `peer` into the first 4 bytes of
    /// `buffer`, whose payload of `payloadLength` bytes starts at offset 4, and returns the length
    /// of the datagram to send to `config.server` (no padding: optional over UDP, §12.5). Nil when
    /// no channel is bound to `peer` (use `send(to:payload:)`, which falls back to a Send
    /// indication) or the payload does not fit.
    public func frameChannelData(to peer: SocketAddress, buffer: UnsafeMutableRawBufferPointer,
                                 payloadLength: Int) -> Int? {
        guard let n = channel(for: peer), payloadLength <= 0xFFFF,
            buffer.count >= ChannelData.headerSize + payloadLength, let base = buffer.baseAddress
        else { return nil }
        ChannelData.writeHeader(channel: n, length: payloadLength, to: base)
        return ChannelData.headerSize + payloadLength
    }

    /// The datagram that carries `payload` to `peer`: ChannelData when a channel is bound, a
    /// Send indication (RFC 8656 §11) when only a permission is. Nil (counted) when neither is or
    /// the client is not allocated. Allocates the returned array; the per-packet path is
    /// `frameChannelData`.
    public mutating func send(to peer: SocketAddress, payload: UnsafeRawBufferPointer, now: Timestamp) -> TURNTransmit? {
        guard case .allocated = state else {
            stats.noPermissionDropped += 1
            return nil
        }
        if let n = channel(for: peer), payload.count <= 0xFFFF {
            let out = [UInt8](unsafeUninitializedCapacity: ChannelData.headerSize + payload.count) { buf, count in
                let raw = UnsafeMutableRawBufferPointer(buf)
                ChannelData.writeHeader(channel: n, length: payload.count, to: raw.baseAddress!)
                if let src = payload.baseAddress, payload.count > 0 {
                    (raw.baseAddress! + ChannelData.headerSize).copyMemory(from: src, byteCount: payload.count)
                }
                count = ChannelData.headerSize + payload.count
            }
            stats.channelDataOut += 1
            return TURNTransmit(destination: config.server, bytes: out)
        }
        guard hasPermission(for: peer.ip, now: now) else {
            stats.noPermissionDropped += 1
            return nil
        }
        let m = Message(type: MessageType(method: .send, messageClass: .indication), transactionID: .random(),
                        attributes: [.xorPeerAddress(peer), .data(Array(payload))])
        let bytes = m.encode()
        guard !bytes.isEmpty else {
            stats.noPermissionDropped += 1
            return nil
        }
        stats.sendIndicationsOut += 1
        return TURNTransmit(destination: config.server, bytes: bytes)
    }

    public mutating func send(to peer: SocketAddress, payload: [UInt8], now: Timestamp) -> TURNTransmit? {
        payload.withUnsafeBytes { send(to: peer, payload: $0, now: now) }
    }
}
