/// The receive-side counter check of whitepaper §5.4.6: a sliding window over the counters seen,
/// kept as RFC 6479's ring of 64-bit blocks so moving the window forward clears whole blocks
/// instead of shifting bits. 128 blocks, one of which is the block being filled, give a window of
/// 127 × 64 = 8128 counters behind the highest one seen (the whitepaper asks for at least 2000).
///
/// A counter is committed only after its packet authenticated (`accept`); `isAcceptable` is the
/// cheap pre-check done before decryption, so a forged packet cannot move the window.
struct ReplayWindow: Sendable {
    private static let blockBits = 64
    private static let blockCount = 128
    static let windowSize: UInt64 = UInt64((blockCount - 1) * blockBits)

    private var blocks: [UInt64]
    /// The highest counter accepted so far (0 before any).
    private(set) var highest: UInt64 = 0

    init() { blocks = [UInt64](repeating: 0, count: Self.blockCount) }

    /// Whether `counter` would be accepted: below `limit` (REJECT_AFTER_MESSAGES), not older than
    /// the window, and not seen before.
    func isAcceptable(_ counter: UInt64, limit: UInt64) -> Bool {
        guard counter < limit else { return false }
        if counter > highest { return true }
        if highest - counter > Self.windowSize { return false }
        let (block, bit) = Self.position(counter)
        return blocks[block] & (1 << bit) == 0
    }

    /// Records `counter`; false if it is a replay, too old or at or beyond `limit`.
    mutating func accept(_ counter: UInt64, limit: UInt64) -> Bool {
        guard counter < limit else { return false }
        if counter > highest {
            // Clear every block between the old highest block and the new one (at most the ring).
            let current = highest / UInt64(Self.blockBits)
            let target = counter / UInt64(Self.blockBits)
            let advance = min(target - current, UInt64(Self.blockCount))
            var i: UInt64 = 1
            while i <= advance {
                blocks[Int((current &+ i) % UInt64(Self.blockCount))] = 0
                i += 1
            }
            highest = counter
        } else if highest - counter > Self.windowSize {
            return false
        }
        let (block, bit) = Self.position(counter)
        let old = blocks[block]
        blocks[block] = old | (1 << bit)
        return old & (1 << bit) == 0
    }

    private static func position(_ counter: UInt64) -> (Int, UInt64) {
        (Int((counter / UInt64(blockBits)) % UInt64(blockCount)), counter % UInt64(blockBits))
    }
}
