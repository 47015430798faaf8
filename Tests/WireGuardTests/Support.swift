import FZCore
import FZTestSupport
import Synchronization

@testable import WireGuard

// MARK: Bytes

func hex(_ s: String) -> [UInt8] {
    let chars = Array(s.utf8)
    precondition(chars.count % 2 == 0, "odd hex string")
    func nibble(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: preconditionFailure("not hex")
        }
    }
    return stride(from: 0, to: chars.count, by: 2).map { nibble(chars[$0]) << 4 | nibble(chars[$0 + 1]) }
}

extension Array where Element == UInt8 {
    var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }
}

extension SecretKey {
    var bytes: [UInt8] { withRawBytes { Array($0) } }
}

/// A minimal IPv4 packet (header + `payload`) whose total-length field is right, so the receiver
/// can strip the padding.
func ipv4Packet(_ payload: [UInt8]) -> [UInt8] {
    let total = 20 + payload.count
    var header: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
    header += payload
    return header
}

func ipv4Packet(size: Int, fill: UInt8 = 0xAB) -> [UInt8] { ipv4Packet([UInt8](repeating: fill, count: max(0, size - 20))) }

/// A jitter source that replays a fixed sequence, so REKEY_TIMEOUT deadlines are exact.
final class JitterSequence: Sendable {
    private let values: [Duration]
    private let position = Mutex(0)

    init(_ values: [Duration]) { self.values = values }

    func next() -> Duration {
        position.withLock { i in
            defer { i += 1 }
            return values[i % values.count]
        }
    }

    var source: @Sendable () -> Duration { { self.next() } }
}

let wallClockStart = TAI64N(unixSeconds: 1_800_000_000, nanoseconds: 0)

// MARK: Two peers on a simulated network

enum Side: Hashable, CustomStringConvertible {
    case alice, bob
    var other: Side { self == .alice ? .bob : .alice }
    var description: String { self == .alice ? "alice" : "bob" }
}

/// A datagram one side sent, as the network saw it.
struct Sent: Equatable {
    let time: Timestamp
    let from: Side
    let bytes: [UInt8]
    var type: UInt8 { bytes[0] }
    var isInitiation: Bool { type == 1 }
    var isResponse: Bool { type == 2 }
    var isCookieReply: Bool { type == 3 }
    var isKeepalive: Bool { type == 4 && bytes.count == 32 }
    var isData: Bool { type == 4 && bytes.count > 32 }
}

/// Alice and Bob, each a `Peer` of the other, joined by an in-memory network on a manual clock.
/// Every datagram a peer emits (encapsulate, decapsulate answers, timer actions, drained queues)
/// goes through `network`; `deliverAll` hands them over until the network is quiet, and
/// `advance` steps the clock from deadline to deadline, running timers on the way.
struct Simulator {
    var clock = ManualClock()
    var alice: Peer
    var bob: Peer
    let aliceKey: PrivateKey
    let bobKey: PrivateKey
    let aliceAddress = SocketAddress("192.0.2.1:51820")!
    let bobAddress = SocketAddress("198.51.100.7:51820")!
    /// Datagrams in flight, in order.
    var network: [(to: Side, bytes: [UInt8])] = []
    /// Every datagram sent, for assertions about timing.
    var sent: [Sent] = []
    /// IP packets each side received.
    var received: [Side: [[UInt8]]] = [.alice: [], .bob: []]
    /// Every decapsulate result per side.
    var results: [Side: [DecapsulateResult]] = [.alice: [], .bob: []]
    /// Every timer action per side (with the bytes stripped to their kind).
    var timerActions: [Side: [TimerAction]] = [.alice: [], .bob: []]
    /// Datagrams towards these sides are lost.
    var blackhole: Set<Side> = []
    var underLoad: Set<Side> = []

    init(psk: PresharedKey? = nil, bobPSK: PresharedKey?? = nil, limits: Limits = .standard,
         alicePersistentKeepalive: Duration? = nil, jitter: @escaping @Sendable () -> Duration = { .milliseconds(100) }) {
        aliceKey = .generate()
        bobKey = .generate()
        let start = clock.now
        alice = Peer(localKey: aliceKey,
                     configuration: PeerConfiguration(publicKey: bobKey.publicKey, presharedKey: psk,
                                                      persistentKeepalive: alicePersistentKeepalive,
                                                      limits: limits, jitter: jitter),
                     wallClock: WallClock(anchor: wallClockStart, at: start), indexSlot: 1)
        bob = Peer(localKey: bobKey,
                   configuration: PeerConfiguration(publicKey: aliceKey.publicKey, presharedKey: bobPSK ?? psk,
                                                    limits: limits, jitter: jitter),
                   wallClock: WallClock(anchor: wallClockStart, at: start), indexSlot: 2)
    }

    var now: Timestamp { clock.now }

    func peer(_ side: Side) -> Peer { side == .alice ? alice : bob }

    mutating func withPeer<R>(_ side: Side, _ body: (inout Peer) -> R) -> R {
        side == .alice ? body(&alice) : body(&bob)
    }

    func address(_ side: Side) -> SocketAddress { side == .alice ? aliceAddress : bobAddress }

    mutating func transmit(from side: Side, _ bytes: [UInt8]) {
        sent.append(Sent(time: now, from: side, bytes: bytes))
        if !blackhole.contains(side.other) { network.append((side.other, bytes)) }
    }

    /// `side` sends an IP packet.
    @discardableResult
    mutating func send(from side: Side, _ packet: [UInt8]) -> EncapsulateResult {
        var buffer = [UInt8](repeating: 0, count: 2048)
        let now = self.now
        let result = withPeer(side) { $0.encapsulate(packet, into: &buffer, now: now) }
        switch result {
        case .datagram(let n), .handshakeInitiation(let n): transmit(from: side, Array(buffer[0..<n]))
        case .queued, .drop: break
        }
        return result
    }

    /// Hands one datagram to `side` and sends whatever it answers.
    @discardableResult
    mutating func deliver(_ bytes: [UInt8], to side: Side) -> DecapsulateResult {
        var buffer = [UInt8](repeating: 0, count: 2048)
        let now = self.now
        let source = address(side.other)
        let load = underLoad.contains(side)
        let result = withPeer(side) { $0.decapsulate(bytes, from: source, into: &buffer, now: now, underLoad: load) }
        results[side, default: []].append(result)
        switch result {
        case .packet(let range): received[side, default: []].append(Array(buffer[range]))
        case .handshakeResponse(let n), .cookieReply(let n), .handshakeCompleted(let n):
            transmit(from: side, Array(buffer[0..<n]))
        case .keepalive, .cookieAccepted, .drop: break
        }
        drainQueue(side)
        return result
    }

    mutating func drainQueue(_ side: Side) {
        var buffer = [UInt8](repeating: 0, count: 2048)
        let now = self.now
        while let n = withPeer(side, { $0.nextQueuedDatagram(into: &buffer, now: now) }) {
            transmit(from: side, Array(buffer[0..<n]))
        }
    }

    /// Delivers datagrams until none are in flight.
    mutating func deliverAll() {
        var steps = 0
        while !network.isEmpty {
            let (to, bytes) = network.removeFirst()
            deliver(bytes, to: to)
            steps += 1
            precondition(steps < 10_000, "the simulated peers never went quiet")
        }
    }

    /// Runs the timers of both peers that are due now, sending what they produce.
    mutating func runTimers() {
        for side in [Side.alice, .bob] where peer(side).nextDeadline <= now {
            let now = self.now
            let actions = withPeer(side) { $0.handleTimeout(now: now) }
            for action in actions {
                timerActions[side, default: []].append(action)
                switch action {
                case .sendHandshakeInitiation(let bytes), .sendKeepalive(let bytes): transmit(from: side, bytes)
                case .handshakeGaveUp, .keysErased: break
                }
            }
        }
    }

    /// Moves time forward by `seconds`, stopping at every deadline on the way.
    mutating func advance(seconds: Double) {
        let target = now + .nanoseconds(Int64(seconds * 1e9))
        deliverAll()
        while true {
            let deadline = max(min(alice.nextDeadline, bob.nextDeadline), now)
            if deadline > target { break }
            clock.advance(by: deadline - now)
            runTimers()
            deliverAll()
            precondition(sent.count < 100_000, "runaway timers")
        }
        clock.advance(by: target - now)
        runTimers()
        deliverAll()
    }

    /// Alice sends one packet and the network runs until quiet: a complete handshake.
    mutating func establish() {
        send(from: .alice, ipv4Packet(size: 60, fill: 1))
        deliverAll()
    }

    func sent(by side: Side, since: Timestamp = .zero) -> [Sent] { sent.filter { $0.from == side && $0.time >= since } }

    func sent(since: Timestamp) -> [Sent] { sent.filter { $0.time >= since } }
}
