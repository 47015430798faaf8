import Connectivity
import FZCore
import STUN

/// The connectivity engine's inbound handling (`ConnectivityNode`, and through it the ICE agents
/// and TURN clients): `bytes`, split at 0xFF 0xFE markers, arrive one by one, by the chunk's first
/// byte from the relay's address (as is, and wrapped as ChannelData on a channel), from a peer's
/// candidate, or from a stranger, at a node with a relay and one connection with remote
/// candidates; time moves on so checks, retransmissions and probes run too. Any crash or trap is
/// a finding, as is a payload range outside the datagram.
func fuzzNode(_ bytes: UnsafeRawBufferPointer) {
    var node = NodeScenario.shared.node
    var now = NodeScenario.start
    var start = 0
    let end = bytes.count
    var i = 0
    while i <= end {
        let atMarker = i + 1 < end && bytes[i] == 0xFF && bytes[i + 1] == 0xFE
        if atMarker || i == end {
            let chunk = Array(bytes[start..<i])
            let selector = chunk.first ?? 0
            let source: SocketAddress
            var datagram = chunk
            switch selector % 4 {
            case 0: source = NodeScenario.relay
            case 1:
                source = NodeScenario.relay
                datagram = [0x40, 0x00, UInt8(chunk.count >> 8 & 0xFF), UInt8(chunk.count & 0xFF)] + chunk
            case 2: source = NodeScenario.remote
            default: source = SocketAddress("192.0.2.77:4000")!
            }
            if case .relayedData(let range, _, _, _) = node.handleInbound(datagram, from: source, socket: NodeScenario.socket, now: now) {
                if range.lowerBound < 0 || range.upperBound > datagram.count { fatalError("payload range outside the datagram") }
            }
            now = now + .milliseconds(Int64(selector) * 20)
            if node.nextDeadline <= now { node.handleTimeout(now: now) }
            while node.pollTransmit() != nil {}
            while node.pollEvent() != nil {}
            _ = node.sendData(to: "peer", [1, 2, 3], now: now)
            start = i + 2
            i += 2
        } else {
            i += 1
        }
    }
}

/// A controlled node with one relay (probed, not answered) and one connection whose peer
/// signalled a host and a relayed candidate, built once and copied for each input.
struct NodeScenario {
    static let socket = SocketAddress("203.0.113.5:51820")!
    static let relay = SocketAddress("198.51.100.1:3478")!
    static let remote = SocketAddress("203.0.113.9:51820")!
    static let start = Timestamp.seconds(100)
    nonisolated(unsafe) static let shared = NodeScenario()  // libFuzzer calls from one thread

    var node: ConnectivityNode<String>

    init() {
        node = ConnectivityNode(config: NodeConfig(role: .controlled, sockets: [Self.socket], hostAddresses: [Self.socket.ip]))
        node.setRelays([NodeRelay(id: "r", name: "r", address: Self.relay, credentials: TURNCredentials(username: "u", password: "p"))],
                       now: Self.start)
        node.connect("peer", local: IceCredentials(ufrag: "loca", password: "localpasswordlocalpassword"),
                     remote: IceCredentials(ufrag: "remo", password: "remotepasswordremotepassword"), now: Self.start)
        node.addRemoteCandidate(Candidate.host(Self.remote), for: "peer", now: Self.start)
        node.addRemoteCandidate(Candidate.relayed(SocketAddress("198.51.100.2:50000")!), for: "peer", now: Self.start)
        while node.pollTransmit() != nil {}
        while node.pollEvent() != nil {}
    }
}
