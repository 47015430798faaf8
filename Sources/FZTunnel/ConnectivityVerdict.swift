import FZCore

/// What the connectivity engine made of a datagram the data plane handed it.
public enum ConnectivityVerdict: Sendable, Equatable {
    /// Its own (ICE, TURN, a relay probe), or dropped and counted there.
    case consumed
    /// A peer's WireGuard message that came through `relay` (ChannelData on a channel the data
    /// plane does not know yet, or a Data indication: `channel` nil), at `payload` in the
    /// datagram. The data plane decrypts it; replies go back on `channel`, or to `relay` raw when
    /// nil (which the relay drops: the engine binds a channel before any data flows).
    case wireGuard(payload: Range<Int>, relay: SocketAddress, channel: UInt16?)
}

/// Timers that run on the data plane's loop beside its own: the connectivity engine's.
public protocol DataPlaneCompanion: AnyObject {
    var nextDeadline: Timestamp { get }
    func handleTimeout(now: Timestamp)
}
