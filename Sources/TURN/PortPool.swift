/// Which ports of the relay range are in use on one relay address. A bitmap: 8 KiB covers
/// every port, and choosing a free one never allocates.
struct PortPool: Sendable {
    let range: ClosedRange<UInt16>
    private var used: [UInt64] = Array(repeating: 0, count: 1024)
    private(set) var inUse = 0

    init(range: ClosedRange<UInt16>) { self.range = range }

    func isFree(_ port: UInt16) -> Bool { range.contains(port) && used[Int(port) >> 6] & (1 << UInt64(port & 63)) == 0 }

    mutating func take(_ port: UInt16) {
        precondition(isFree(port), "port \(port) taken twice")
        used[Int(port) >> 6] |= 1 << UInt64(port & 63)
        inUse += 1
    }

    mutating func release(_ port: UInt16) {
        guard range.contains(port), used[Int(port) >> 6] & (1 << UInt64(port & 63)) != 0 else { return }
        used[Int(port) >> 6] &= ~(1 << UInt64(port & 63))
        inUse -= 1
    }

    /// A free port at or after a random start, wrapping once; `even` restricts to even ports
    /// and `pairFree` additionally requires port+1 to be free (EVEN-PORT with R=1).
    func findFree(startingAt start: UInt16, even: Bool, pairFree: Bool) -> UInt16? {
        let lo = Int(range.lowerBound)
        let count = Int(range.upperBound) - lo + 1
        let offset = (Int(start) - lo) % count
        for i in 0..<count {
            let p = UInt16(lo + (offset + i) % count)
            if even && p & 1 != 0 { continue }
            guard isFree(p) else { continue }
            if pairFree {
                guard p < UInt16.max, isFree(p + 1) else { continue }
            }
            return p
        }
        return nil
    }
}
