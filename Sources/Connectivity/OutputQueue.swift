/// The outputs a sans-IO state machine queues for its caller (transmits, events), drained in
/// order by `poll…()`. Popping advances a head index instead of shifting the array, and the
/// storage is reused once drained, so steady traffic allocates nothing.
struct OutputQueue<Element: Sendable>: Sendable {
    private var items: [Element] = []
    private var head = 0

    mutating func append(_ item: Element) { items.append(item) }

    mutating func next() -> Element? {
        guard head < items.count else { return nil }
        let item = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        }
        return item
    }
}
