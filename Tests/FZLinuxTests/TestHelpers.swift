#if canImport(Glibc)
import Glibc
#endif
import FZCore
import FZLinux
import Synchronization

/// A value shared between a test and an event loop thread.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    var value: Value { mutex.withLock { $0 } }
    func update<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

/// Polls `condition` every millisecond until it holds or `limit` passes; returns whether it held.
/// Bounded, so a broken loop fails the test instead of hanging it.
@discardableResult
func waitUntil(limit: Duration = .seconds(5), _ condition: () -> Bool) -> Bool {
    let end = MonotonicClock.now() + limit
    while !condition() {
        if MonotonicClock.now() >= end { return false }
        usleep(1_000)
    }
    return true
}

/// A recognisable datagram: a 2-byte big-endian index, then bytes derived from index and offset.
func patternDatagram(index: Int, length: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: length)
    for j in 0..<length {
        bytes[j] = UInt8(truncatingIfNeeded: index &* 31 &+ j)
    }
    if length >= 2 {
        bytes[0] = UInt8(truncatingIfNeeded: index >> 8)
        bytes[1] = UInt8(truncatingIfNeeded: index)
    }
    return bytes
}

let loopbackV4 = SocketAddress(IPv4Address.loopback, 0)
let loopbackV6 = SocketAddress(IPv6Address.loopback, 0)

extension UDPSocket {
    /// Sends one datagram, expecting the kernel to take it.
    func sendOrFail(_ bytes: [UInt8], to destination: SocketAddress) throws {
        let result = try bytes.withUnsafeBytes { try send($0, to: destination) }
        guard case .processed(let n) = result, n == bytes.count else { throw TestFailure("sendto did not send \(bytes.count) bytes") }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
