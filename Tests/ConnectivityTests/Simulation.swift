import FZCore
import FZTestSupport
import STUN
import TURN
import Testing

@testable import Connectivity

/// Relayed sockets the in-process server asks for; nothing is bound.
struct NoSockets: RelaySocketProvider {
    var open: Set<SocketAddress> = []
    mutating func openRelay(at address: SocketAddress, dontFragment: Bool) -> Bool { open.insert(address).inserted }
    mutating func closeRelay(at address: SocketAddress) { open.remove(address) }
}

let serverAddress = SocketAddress("198.51.100.1:3478")!
let clientAddress = SocketAddress("203.0.113.5:40000")!
let peer = SocketAddress("8.8.8.8:5000")!
let otherPeer = SocketAddress("9.9.9.9:6000")!
let realm = "fz.test"
let unixAtZero: Int64 = 1_800_000_000

func makeServer(_ adjust: (inout ServerConfig) -> Void = { _ in }) -> TURNServer<NoSockets> {
    var c = ServerConfig(realm: realm, relayAddresses: [RelayAddress(bind: serverAddress.ip)])
    adjust(&c)
    var s = TURNServer(config: c, credentials: CredentialStore(realm: realm, users: ["alice": "secret"], secrets: ["rest-secret"]),
                       sockets: NoSockets())
    s.unixSecondsAtZero = unixAtZero
    return s
}

/// The real sans-IO `TURNServer` and a `TURNClient` wired together on a manual clock, with a
/// simulated peer behind the relay. Datagrams are delivered at once (no latency) unless the
/// server is `down`, in which case the client's transmits vanish.
struct Simulation {
    var clock = ManualClock()
    var server: TURNServer<NoSockets>
    var client: TURNClient
    var down = false
    /// Every transmit the client made, with when.
    var sent: [(at: Timestamp, message: Message?)] = []
    var events: [TURNClientEvent] = []
    /// What reached the peer through the relay: (relayed address it came from, payload).
    var atPeer: [(from: SocketAddress, payload: [UInt8])] = []
    /// What the client unwrapped: (peer, payload).
    var atClient: [(peer: SocketAddress, payload: [UInt8])] = []

    init(credentials: TURNCredentials = TURNCredentials(username: "alice", password: "secret"),
         server: TURNServer<NoSockets> = makeServer(), adjust: (inout TURNClientConfig) -> Void = { _ in }) {
        var c = TURNClientConfig(server: serverAddress, credentials: credentials)
        adjust(&c)
        client = TURNClient(config: c)
        self.server = server
    }

    var now: Timestamp { clock.now }

    /// Delivers what the client queued (and the answers to it) until nothing is left.
    mutating func pump() {
        while let t = client.pollTransmit() {
            #expect(t.destination == serverAddress)
            sent.append((clock.now, try? Message.decode(t.bytes)))
            if down { continue }
            let action = t.bytes.withUnsafeBytes {
                server.handleClient($0, from: clientAddress, listener: serverAddress, now: clock.now)
            }
            switch action {
            case .none:
                break
            case .reply(let bytes):
                deliverToClient(bytes)
            case .forward(let from, let to, let offset, let length, _):
                #expect(to.ip == peer.ip || to.ip == otherPeer.ip)
                atPeer.append((from, Array(t.bytes[offset..<offset + length])))
            }
        }
        while let e = client.pollEvent() { events.append(e) }
    }

    mutating func deliverToClient(_ bytes: [UInt8], from: SocketAddress = serverAddress) {
        var copy = bytes
        let input = copy.withUnsafeMutableBytes { client.handle(datagram: UnsafeRawBufferPointer($0), from: from, now: clock.now) }
        if case .data(let p, let range) = input { atClient.append((p, Array(copy[range]))) }
        while let e = client.pollEvent() { events.append(e) }
    }

    /// Advances the clock to `seconds` from now, firing the client's and the server's timers on
    /// the way at their deadlines.
    mutating func advance(seconds: Double) {
        let end = clock.now + .nanoseconds(Int64(seconds * 1e9))
        while true {
            let next = min(client.nextDeadline, server.nextDeadline)
            guard next <= end else { break }
            if next > clock.now { clock.advance(by: next - clock.now) }
            if server.nextDeadline <= clock.now { server.handleTimeout(now: clock.now) }
            if client.nextDeadline <= clock.now { client.handleTimeout(now: clock.now) }
            pump()
        }
        if end > clock.now { clock.advance(by: end - clock.now) }
    }

    /// The peer sends `payload` to the relayed address; the server's answer goes to the client.
    @discardableResult
    mutating func peerSends(_ payload: [UInt8], from source: SocketAddress = peer) -> PeerAction {
        guard let relayed = client.relayedAddress else { return .none }
        let action = payload.withUnsafeBytes { server.handlePeer($0, from: source, relayed: relayed, now: clock.now) }
        switch action {
        case .none:
            break
        case .channelData(_, _, let channel):
            var frame = [UInt8](repeating: 0, count: 4 + payload.count)
            frame.withUnsafeMutableBytes { ChannelData.writeHeader(channel: channel, length: payload.count, to: $0.baseAddress!) }
            frame.replaceSubrange(4..., with: payload)
            deliverToClient(frame)
        case .dataIndication(_, _, let from):
            var buffer = [UInt8](repeating: 0, count: DataIndication.size(peer: from, payloadLength: payload.count)!)
            let n = payload.withUnsafeBytes { p in
                buffer.withUnsafeMutableBytes { DataIndication.write(peer: from, transactionID: .random(), payload: p, into: $0) }
            }
            deliverToClient(Array(buffer[0..<n!]))
        case .streamChannelData, .streamDataIndication:
            Issue.record("the simulated client is on UDP; a stream action is a server bug")
        }
        return action
    }

    /// Allocates and returns the relayed address.
    mutating func allocate() -> SocketAddress? {
        client.allocate(now: clock.now)
        pump()
        return client.relayedAddress
    }

    func requests(_ method: STUN.Method) -> [Timestamp] {
        sent.filter { $0.message?.type == MessageType(method: method, messageClass: .request) }.map(\.at)
    }
}

struct Missing: Error {}

/// `#require` for expressions with mutating calls (the macro's closure cannot mutate).
func unwrap<T>(_ value: T?, sourceLocation: SourceLocation = #_sourceLocation) throws -> T {
    guard let value else {
        Issue.record("unexpectedly nil", sourceLocation: sourceLocation)
        throw Missing()
    }
    return value
}
