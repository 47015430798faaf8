import FZCore

/// The device's timer schedule: when each peer next needs `handleTimeout`, kept so that the
/// earliest deadline of thousands of peers is read in O(1) and the peers that are due are found
/// in O(log n) each, instead of scanning every slot on every event-loop iteration.
///
/// A binary min-heap of (deadline, slot) with lazy deletion, plus, per slot, the deadline the
/// heap is known to hold for it (`scheduled`):
/// - after anything changes a peer, `reschedule` reads its `nextDeadline`; only a deadline
///   *earlier* than the scheduled one is pushed (a later one leaves the old entry, which fires
///   early, finds nothing due and pushes the real deadline then). Traffic, which moves timers
///   later on every packet, therefore costs one comparison per packet and no heap work;
/// - an entry whose deadline is no longer its slot's scheduled one is stale and skipped.
/// The heap holds at most one live entry per slot; stale ones are bounded by compaction.
struct DeadlineSchedule: Sendable {
    struct Entry: Sendable {
        var deadline: Timestamp
        var slot: UInt32
    }

    private(set) var heap: [Entry] = []
    /// Per slot: the earliest deadline an entry in the heap carries for it (distantFuture: none).
    private var scheduled: [Timestamp] = []

    /// The earliest entry's deadline: the device's next deadline, or a little earlier when that
    /// entry went stale (the caller then wakes, finds nothing due, and the entry is dropped).
    var earliest: Timestamp { heap.first?.deadline ?? .distantFuture }

    /// Records that `slot`'s peer now wants to wake at `deadline` (distantFuture: never).
    @inline(__always)
    mutating func reschedule(_ slot: UInt32, deadline: Timestamp) {
        let index = Int(slot)
        if index >= scheduled.count {
            scheduled.append(contentsOf: repeatElement(.distantFuture, count: index + 1 - scheduled.count))
        }
        guard deadline < scheduled[index] else { return }
        scheduled[index] = deadline
        push(Entry(deadline: deadline, slot: slot))
        if heap.count > 64 && heap.count > 4 * scheduled.count { compact() }
    }

    /// Forgets a slot (its peer was removed); entries left for it are skipped as stale.
    mutating func remove(_ slot: UInt32) {
        if Int(slot) < scheduled.count { scheduled[Int(slot)] = .distantFuture }
    }

    /// Pops the next slot whose scheduled deadline is at or before `now`; nil when none is due.
    /// The slot is no longer scheduled: the caller runs its timers and reschedules it.
    mutating func popDue(now: Timestamp) -> UInt32? {
        while let top = heap.first, top.deadline <= now {
            popTop()
            let index = Int(top.slot)
            guard index < scheduled.count, scheduled[index] == top.deadline else { continue }
            scheduled[index] = .distantFuture
            return top.slot
        }
        return nil
    }

    /// Rebuilds the heap from `scheduled`: one entry per scheduled slot.
    private mutating func compact() {
        heap.removeAll(keepingCapacity: true)
        for index in scheduled.indices where scheduled[index] != .distantFuture {
            heap.append(Entry(deadline: scheduled[index], slot: UInt32(index)))
        }
        var i = heap.count / 2
        while i > 0 {
            i -= 1
            siftDown(i)
        }
    }

    private mutating func push(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func popTop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        siftDown(0)
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { return }
            var smallest = left
            if left + 1 < heap.count, heap[left + 1].deadline < heap[left].deadline { smallest = left + 1 }
            guard heap[smallest].deadline < heap[parent].deadline else { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
