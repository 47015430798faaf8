import Connectivity
import FZCore
import STUN
import TURN

/// The TURN client's inbound handling: `bytes`, split at 0xFF 0xFE markers, arrive one by one from
/// the server's address at a client that holds an allocation, a channel and a permission, with
/// time moving on (so retransmissions, refreshes and timeouts run too). After each datagram the
/// data path is exercised and the outputs drained. Any crash or trap is a finding, as is an
/// unwrapped payload range outside the datagram.
func fuzzClient(_ bytes: UnsafeRawBufferPointer) {
    var client = ClientScenario.shared.client
    var now = ClientScenario.start
    var start = 0
    let end = bytes.count
    var i = 0
    var frame = [UInt8](repeating: 0, count: 64)
    while i <= end {
        let atMarker = i + 1 < end && bytes[i] == 0xFF && bytes[i + 1] == 0xFE
        if atMarker || i == end {
            let chunk = UnsafeRawBufferPointer(rebasing: bytes[start..<i])
            if case .data(_, let range) = client.handle(datagram: chunk, from: ClientScenario.server, now: now) {
                if range.lowerBound < 0 || range.upperBound > chunk.count { fatalError("payload range outside the datagram") }
            }
            // Time moves by the first byte × 7 s: enough to reach refreshes, expiries and timeouts.
            now = now + .seconds(Int64(chunk.first ?? 0) * 7)
            if client.nextDeadline <= now { client.handleTimeout(now: now) }
            while client.pollTransmit() != nil {}
            while client.pollEvent() != nil {}
            _ = frame.withUnsafeMutableBytes { client.frameChannelData(to: ClientScenario.peer, buffer: $0, payloadLength: 60) }
            _ = client.send(to: ClientScenario.peer, payload: [1, 2, 3], now: now)
            if case .failed = client.state { client.allocate(now: now) }
            start = i + 2
            i += 2
        } else {
            i += 1
        }
    }
}

/// A client allocated on an in-process `TURNServer`, with a channel and a permission to `peer`,
/// built once and copied for each input.
struct ClientScenario {
    static let server = SocketAddress("198.51.100.1:3478")!
    static let address = SocketAddress("203.0.113.5:40000")!
    static let peer = SocketAddress("8.8.8.8:5000")!
    static let start = Timestamp.seconds(100)
    nonisolated(unsafe) static let shared = ClientScenario()  // libFuzzer calls from one thread

    var client: TURNClient

    init() {
        let realm = "fuzz"
        var turn = TURNServer(
            config: ServerConfig(realm: realm, relayAddresses: [RelayAddress(bind: Self.server.ip)]),
            credentials: CredentialStore(realm: realm, users: ["u": "p"]),
            sockets: NullSockets(), nonceSecret: Array(repeating: 9, count: 32))
        client = TURNClient(config: TURNClientConfig(server: Self.server, credentials: TURNCredentials(username: "u", password: "p")))
        client.allocate(now: Self.start)
        var asked = false
        for _ in 0..<16 {
            while let t = client.pollTransmit() {
                let action = t.bytes.withUnsafeBytes { turn.handleClient($0, from: Self.address, listener: Self.server, now: Self.start) }
                if case .reply(let r) = action { _ = client.handle(datagram: r, from: Self.server, now: Self.start) }
            }
            if client.relayedAddress != nil, !asked {
                client.bindChannel(to: Self.peer, now: Self.start)
                asked = true
            }
        }
        precondition(client.channel(for: Self.peer) != nil, "the fuzz scenario could not bind a channel")
        while client.pollEvent() != nil {}
    }
}
