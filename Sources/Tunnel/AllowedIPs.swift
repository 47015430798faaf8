import FZCore

/// WireGuard's cryptokey routing table (whitepaper §2): prefixes to values (peers), looked up by
/// longest prefix. Outgoing packets choose their peer by destination; incoming packets are
/// accepted only if their source maps back to the peer they came from.
///
/// One hash table per prefix length in use, scanned from the longest: at most 33 (IPv4) or 129
/// (IPv6) probes, in practice a few, and a lookup never allocates. Inserting a prefix that is
/// already present moves it to the new value, as `wg set ... allowed-ips` does. Changes are
/// incremental: inserting or removing one prefix touches one hash table, never the others
/// (`Tunnel` keeps each peer's own prefixes, so removing a peer removes exactly those).
public struct AllowedIPs<Value: Equatable & Sendable>: Sendable {
    struct V6Key: Hashable, Sendable {
        var high: UInt64
        var low: UInt64
    }

    struct Level<Key: Hashable & Sendable>: Sendable {
        var length: Int
        var table: [Key: Value]
    }

    private var v4: [Level<UInt32>] = []
    private var v6: [Level<V6Key>] = []

    public init() {}

    public var isEmpty: Bool { v4.isEmpty && v6.isEmpty }

    public mutating func insert(_ prefix: CIDR, _ value: Value) {
        switch prefix.address {
        case .v4(let a): Self.insert(&v4, prefix.prefixLength, a.value, value)
        case .v6(let a): Self.insert(&v6, prefix.prefixLength, V6Key(high: a.high, low: a.low), value)
        }
    }

    /// Removes one prefix (exactly this address and length); returns the value it mapped to.
    @discardableResult
    public mutating func remove(_ prefix: CIDR) -> Value? {
        switch prefix.address {
        case .v4(let a): Self.remove(&v4, prefix.prefixLength, a.value)
        case .v6(let a): Self.remove(&v6, prefix.prefixLength, V6Key(high: a.high, low: a.low))
        }
    }

    /// The value of exactly this prefix (not a longest-prefix lookup).
    public func value(at prefix: CIDR) -> Value? {
        switch prefix.address {
        case .v4(let a): v4.first { $0.length == prefix.prefixLength }?.table[a.value]
        case .v6(let a): v6.first { $0.length == prefix.prefixLength }?.table[V6Key(high: a.high, low: a.low)]
        }
    }

    /// The number of prefixes in the table.
    public var count: Int { v4.reduce(0) { $0 + $1.table.count } + v6.reduce(0) { $0 + $1.table.count } }

    /// Removes every prefix mapped to a value matching `predicate` (a scan of every table: for
    /// one peer's prefixes, `remove(_:)` each of them).
    public mutating func removeAll(where predicate: (Value) -> Bool) {
        for i in v4.indices { v4[i].table = v4[i].table.filter { !predicate($0.value) } }
        for i in v6.indices { v6[i].table = v6[i].table.filter { !predicate($0.value) } }
        v4.removeAll { $0.table.isEmpty }
        v6.removeAll { $0.table.isEmpty }
    }

    public func lookup(_ ip: IPAddress) -> Value? {
        switch ip {
        case .v4(let a): lookup(v4: a.value)
        case .v6(let a): lookup(v6High: a.high, low: a.low)
        }
    }

    @inline(__always)
    public func lookup(v4 address: UInt32) -> Value? {
        for level in v4 {
            let mask: UInt32 = level.length == 0 ? 0 : UInt32.max << (32 - level.length)
            if let value = level.table[address & mask] { return value }
        }
        return nil
    }

    @inline(__always)
    public func lookup(v6High high: UInt64, low: UInt64) -> Value? {
        for level in v6 {
            let n = level.length
            let mh: UInt64 = n == 0 ? 0 : (n >= 64 ? .max : UInt64.max << (64 - n))
            let ml: UInt64 = n <= 64 ? 0 : (n == 128 ? .max : UInt64.max << (128 - n))
            if let value = level.table[V6Key(high: high & mh, low: low & ml)] { return value }
        }
        return nil
    }

    /// Every prefix and its value, longest prefixes first.
    public var entries: [(CIDR, Value)] {
        var result: [(CIDR, Value)] = []
        for level in v4 {
            for (key, value) in level.table {
                result.append((CIDR(address: .v4(IPv4Address(key)), prefixLength: level.length)!, value))
            }
        }
        for level in v6 {
            for (key, value) in level.table {
                result.append((CIDR(address: .v6(IPv6Address(high: key.high, low: key.low)), prefixLength: level.length)!,
                               value))
            }
        }
        return result
    }

    private static func insert<Key>(_ levels: inout [Level<Key>], _ length: Int, _ key: Key, _ value: Value) {
        if let i = levels.firstIndex(where: { $0.length == length }) {
            levels[i].table[key] = value
            return
        }
        let position = levels.firstIndex { $0.length < length } ?? levels.endIndex
        levels.insert(Level(length: length, table: [key: value]), at: position)
    }

    private static func remove<Key>(_ levels: inout [Level<Key>], _ length: Int, _ key: Key) -> Value? {
        guard let i = levels.firstIndex(where: { $0.length == length }) else { return nil }
        let removed = levels[i].table.removeValue(forKey: key)
        if levels[i].table.isEmpty { levels.remove(at: i) }
        return removed
    }
}
