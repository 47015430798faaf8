import FZCore
import STUN
import TURN

/// One libFuzzer input. The first byte picks what is fuzzed:
/// - even: `Message.decode` on the rest, and a re-encode of whatever decodes;
/// - odd, bit 1 clear: the rest, split at 0xFF 0xFE markers into datagrams, fed to a TURN server
///   through one 5-tuple that already holds an authenticated allocation with a channel and a
///   permission, alternating client and peer directions, with time moving on;
/// - odd, bit 1 set, bit 2 clear: the same datagrams fed to the TURN client (`fuzzClient`) as if from its server;
/// - odd, bits 1 and 2 set: the same datagrams fed to the connectivity engine (`fuzzNode`): ICE
///   agents, TURN client, relay probes.
/// Any crash, trap or sanitizer report is a finding.
func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    if data[0] & 1 == 0 {
        if let m = try? Message.decode(bytes) {
            _ = m.encode(integrity: MessageIntegrity(key: [1, 2, 3]), fingerprint: true)
            _ = m.checkIntegrity(key: [1, 2, 3])
            _ = m.unknownComprehensionRequired
        }
        _ = ChannelData.parse(bytes)
        checkSendIndicationScan(bytes)
        return 0
    }
    if data[0] & 6 == 6 {
        fuzzNode(bytes)
        return 0
    }
    if data[0] & 2 != 0 {
        fuzzClient(bytes)
        return 0
    }
    var h = Scenario.shared
    var now = Timestamp.seconds(100)
    var start = 0
    var toPeer = true
    let end = bytes.count
    var i = 0
    while i <= end {
        let atMarker = i + 1 < end && bytes[i] == 0xFF && bytes[i + 1] == 0xFE
        if atMarker || i == end {
            let chunk = UnsafeRawBufferPointer(rebasing: bytes[start..<i])
            if toPeer {
                _ = h.server.handleClient(chunk, from: Scenario.client, listener: Scenario.listener, now: now)
            } else {
                _ = h.server.handlePeer(chunk, from: Scenario.peer, relayed: h.relayed, now: now)
            }
            toPeer.toggle()
            now = now + .milliseconds(Int64(chunk.first ?? 0) * 37)
            if h.server.nextDeadline <= now { h.server.handleTimeout(now: now) }
            start = i + 2
            i += 2
        } else {
            i += 1
        }
    }
    return 0
}

/// The relay's in-place Send indication scanner must agree with the full decoder wherever it
/// answers (a differential check: a disagreement is a finding, like a crash).
func checkSendIndicationScan(_ bytes: UnsafeRawBufferPointer) {
    switch SendIndication.scan(bytes) {
    case .indication(let scanned):
        guard let m = try? Message.decode(bytes) else { fatalError("scan accepted a Send indication the decoder rejects") }
        if m.xorPeerAddresses.first != scanned.peer { fatalError("scan and decoder disagree on XOR-PEER-ADDRESS") }
        let data = scanned.data.map { Array(bytes[$0]) }
        if data != m.data { fatalError("scan and decoder disagree on DATA") }
        if scanned.dontFragment != m.dontFragment { fatalError("scan and decoder disagree on DONT-FRAGMENT") }
    case .malformed:
        if (try? Message.decode(bytes)) != nil { fatalError("scan rejected a Send indication the decoder accepts") }
    case .needsDecoder:
        break
    }
}

struct NullSockets: RelaySocketProvider {
    mutating func openRelay(at address: SocketAddress, dontFragment: Bool) -> Bool { true }
    mutating func closeRelay(at address: SocketAddress) {}
}

/// A server holding one allocation, built once and copied for each input (value semantics keep
/// runs independent).
struct Scenario {
    static let client = SocketAddress("203.0.113.5:40000")!
    static let listener = SocketAddress("198.51.100.1:3478")!
    static let peer = SocketAddress("8.8.8.8:5000")!
    nonisolated(unsafe) static let shared = Scenario()  // libFuzzer calls from one thread

    var server: TURNServer<NullSockets>
    var relayed: SocketAddress

    init() {
        let realm = "fuzz"
        server = TURNServer(
            config: ServerConfig(realm: realm, relayAddresses: [RelayAddress(bind: IPAddress("198.51.100.1")!)]),
            credentials: CredentialStore(realm: realm, users: ["u": "p"], secrets: ["s"]),
            sockets: NullSockets(), nonceSecret: Array(repeating: 7, count: 32))
        let now = Timestamp.seconds(100)
        func request(_ server: inout TURNServer<NullSockets>, _ method: STUN.Method, _ attrs: [Attribute], nonce: String?) -> Message? {
            var all = attrs
            var integrity: MessageIntegrity?
            if let n = nonce {
                all += [.username("u"), .realm(realm), .nonce(n)]
                integrity = MessageIntegrity(key: LongTermCredentials.key(username: "u", realm: realm, password: "p"))
            }
            let m = Message(type: MessageType(method: method, messageClass: .request), transactionID: .random(), attributes: all)
            let bytes = m.encode(integrity: integrity)
            let action = bytes.withUnsafeBytes { server.handleClient($0, from: Self.client, listener: Self.listener, now: now) }
            guard case .reply(let r) = action else { return nil }
            return try? Message.decode(r)
        }
        let nonce = request(&server, .allocate, [.requestedTransport(17)], nonce: nil)!.nonce!
        relayed = request(&server, .allocate, [.requestedTransport(17)], nonce: nonce)!.xorRelayedAddresses[0]
        _ = request(&server, .channelBind, [.channelNumber(0x4001), .xorPeerAddress(Self.peer)], nonce: nonce)
    }
}
