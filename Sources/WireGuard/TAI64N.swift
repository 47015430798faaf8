import FZCore

/// A TAI64N timestamp (whitepaper §5.1, §5.4.2): 12 bytes, a big-endian 64-bit TAI64 label then
/// big-endian nanoseconds. Its only protocol role is the replay rule: a responder accepts an
/// initiation only if its timestamp is greater than the last one accepted from that peer.
public struct TAI64N: Comparable, Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 12
    /// The TAI64 label of the Unix epoch, 2^62 + 10, as wireguard-go and the Linux kernel use.
    public static let unixEpochLabel: UInt64 = 0x4000_0000_0000_000A

    public var seconds: UInt64
    public var nanoseconds: UInt32

    public init(seconds: UInt64, nanoseconds: UInt32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// From a wall-clock reading the caller made (seconds and nanoseconds since 1970).
    public init(unixSeconds: UInt64, nanoseconds: UInt32) {
        self.init(seconds: Self.unixEpochLabel &+ unixSeconds, nanoseconds: nanoseconds)
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        var s: UInt64 = 0
        var n: UInt32 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { s = s << 8 | UInt64(b) } else { n = n << 8 | UInt32(b) }
        }
        self.init(seconds: s, nanoseconds: n)
    }

    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: seconds >> (56 - 8 * $0)) }
            + (0..<4).map { UInt8(truncatingIfNeeded: nanoseconds >> (24 - 8 * $0)) }
    }

    public static func < (l: TAI64N, r: TAI64N) -> Bool { (l.seconds, l.nanoseconds) < (r.seconds, r.nanoseconds) }

    public var description: String { "tai64n(\(seconds).\(nanoseconds))" }
}

/// The wall clock as the handshake sees it: one reading the caller took (`anchor`) at the
/// monotonic instant `monotonic`. Later timestamps add the monotonic time elapsed since, as
/// boringtun's `TimeStamper` does, so they never run backwards within a process, and nothing in
/// this target reads a clock. A daemon re-anchors whenever it likes (e.g. at start).
public struct WallClock: Sendable {
    public var anchor: TAI64N
    public var monotonic: Timestamp

    public init(anchor: TAI64N, at monotonic: Timestamp) {
        self.anchor = anchor
        self.monotonic = monotonic
    }

    /// Nanoseconds are rounded down to a multiple of 2^24 ns (~16.8 ms, below the 50 initiations
    /// a second a responder accepts) so the timestamp reveals no precise clock, as the kernel
    /// implementation and wireguard-go do.
    public func timestamp(at now: Timestamp) -> TAI64N {
        let elapsed = now >= monotonic ? now.nanoseconds - monotonic.nanoseconds : 0
        let total = UInt64(anchor.nanoseconds) + elapsed % 1_000_000_000
        let seconds = anchor.seconds &+ elapsed / 1_000_000_000 &+ total / 1_000_000_000
        let nanos = UInt32(total % 1_000_000_000) & ~UInt32(0xFF_FFFF)
        return TAI64N(seconds: seconds, nanoseconds: nanos)
    }
}
