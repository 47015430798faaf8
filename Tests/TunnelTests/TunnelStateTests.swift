import FZCore
import FZTestSupport
import Testing
import WireGuard

@testable import Tunnel

/// A gateway-side `TunnelState` and standalone client peers, with real WireGuard crypto.
struct TunnelHarness {
    var clock = ManualClock()
    let gatewayKey = PrivateKey.generate()
    let gatewayAddress = SocketAddress("198.18.0.1:51820")!
    var state: TunnelState
    var clients: [Peer] = []
    var clientKeys: [PrivateKey] = []
    var ids: [PeerID] = []
    static let anchor = TAI64N(unixSeconds: 1_800_000_000, nanoseconds: 0)

    init() {
        state = TunnelState(device: Device(privateKey: gatewayKey, wallClock: WallClock(anchor: Self.anchor, at: .seconds(1_000))))
    }

    /// Adds a client with tunnel address 100.64.0.(i+2) and the given filter.
    @discardableResult
    mutating func addClient(filter: PacketFilter = .allowAll, path: PeerPath = .roaming) -> Int {
        let key = PrivateKey.generate()
        let i = clients.count
        clientKeys.append(key)
        ids.append(state.addPeer(PeerConfiguration(publicKey: key.publicKey), allowedIPs: [CIDR("100.64.0.\(i + 2)/32")!],
                                 path: path, filter: filter)!)
        clients.append(Peer(localKey: key, configuration: PeerConfiguration(publicKey: gatewayKey.publicKey),
                            wallClock: WallClock(anchor: Self.anchor, at: clock.now)))
        return i
    }

    func clientAddress(_ i: Int) -> SocketAddress { SocketAddress("198.18.1.\(i + 1):40000")! }

    /// Client `i` sends `packet`; what the gateway's state decides for the decrypted packets:
    /// (peer, admission) per delivered packet, or the drop.
    mutating func clientSends(_ i: Int, _ packet: [UInt8]) -> [(PeerID?, DecapsulateResult, TunnelState.Admission?)] {
        var buffer = [UInt8](repeating: 0, count: 2048)
        var toGateway: [[UInt8]] = []
        switch clients[i].encapsulate(packet, into: &buffer, now: clock.now) {
        case .datagram(let n), .handshakeInitiation(let n): toGateway.append(Array(buffer[0..<n]))
        default: break
        }
        var outcomes: [(PeerID?, DecapsulateResult, TunnelState.Admission?)] = []
        while !toGateway.isEmpty {
            let datagram = toGateway.removeFirst()
            var out = [UInt8](repeating: 0, count: 2048)
            let (peer, result) = state.device.decapsulate(datagram, from: clientAddress(i), into: &out, now: clock.now)
            var admission: TunnelState.Admission?
            if case .packet(let range) = result, let peer {
                admission = Array(out[range]).withUnsafeBytes { state.admit($0, from: peer) }
            }
            outcomes.append((peer, result, admission))
            if case .handshakeResponse(let n) = result {
                var back = [UInt8](repeating: 0, count: 2048)
                if case .handshakeCompleted(let m) = clients[i].decapsulate(Array(out[0..<n]), from: gatewayAddress,
                                                                             into: &back, now: clock.now) {
                    toGateway.append(Array(back[0..<m]))
                }
            }
        }
        return outcomes
    }

    func route(_ packet: [UInt8]) -> TunnelState.Routing { packet.withUnsafeBytes { state.route($0) } }
}

@Suite("TunnelState: peers, AllowedIPs, paths and filters that change at run time")
struct TunnelStateTests {
    @Test("a decrypted packet whose inner source is outside the sender's AllowedIPs is not delivered")
    func sourceOutsideAllowedIPs() {
        var h = TunnelHarness()
        h.addClient()
        h.addClient()
        let own = h.clientSends(0, Packets.v4("100.64.0.2", "10.0.0.1"))
        #expect(own.last?.2 == .deliver)
        // Spoofing another client's address, or one nobody has.
        #expect(h.clientSends(0, Packets.v4("100.64.0.3", "10.0.0.1")).last?.2 == .sourceNotAllowed)
        #expect(h.clientSends(0, Packets.v4("192.0.2.9", "10.0.0.1")).last?.2 == .sourceNotAllowed)
        let notIP = [UInt8](repeating: 0x70, count: 40)
        #expect(notIP.withUnsafeBytes { h.state.admit($0, from: h.ids[0]) } == .malformed)
        #expect(h.clientSends(1, Packets.v4("100.64.0.3", "10.0.0.1")).last?.2 == .deliver)
    }

    @Test("the sender's packet filter decides what a delivered packet may reach")
    func filterVerdicts() {
        var h = TunnelHarness()
        let web = PacketFilter(rules: [.init(destination: CIDR("10.0.1.10/32")!, protocols: .tcp(443...443))])
        h.addClient(filter: web)
        h.addClient(filter: .denyAll)
        #expect(h.clientSends(0, Packets.v4("100.64.0.2", "10.0.1.10", protocol: Packets.tcp, port: 443)).last?.2 == .deliver)
        #expect(h.clientSends(0, Packets.v4("100.64.0.2", "10.0.1.10", protocol: Packets.tcp, port: 22)).last?.2 == .filtered)
        #expect(h.clientSends(0, Packets.v4("100.64.0.2", "10.0.1.11", protocol: Packets.tcp, port: 443)).last?.2 == .filtered)
        #expect(h.clientSends(1, Packets.v4("100.64.0.3", "10.0.1.10", protocol: Packets.tcp, port: 443)).last?.2 == .filtered)
        // A new authorization widens the filter at run time.
        h.state.setFilter(PacketFilter(rules: web.rules! + [.init(destination: CIDR("10.0.1.10/32")!, protocols: .tcp(22...22))]),
                          of: h.ids[0])
        #expect(h.clientSends(0, Packets.v4("100.64.0.2", "10.0.1.10", protocol: Packets.tcp, port: 22)).last?.2 == .deliver)
    }

    @Test("a peer removed mid-traffic: its sessions, prefixes and channel are gone, the others keep working")
    func removalMidTraffic() {
        var h = TunnelHarness()
        h.addClient(path: .relayed(relay: SocketAddress("198.18.9.1:3478")!, channel: 0x4001))
        h.addClient()
        #expect(h.clientSends(0, Packets.v4("100.64.0.2", "10.0.0.1")).last?.2 == .deliver)
        #expect(h.clientSends(1, Packets.v4("100.64.0.3", "10.0.0.1")).last?.2 == .deliver)
        #expect(h.route(Packets.v4("10.0.0.1", "100.64.0.2")) == .peer(h.ids[0]))

        h.state.removePeer(h.ids[0])
        let after = h.clientSends(0, Packets.v4("100.64.0.2", "10.0.0.1"))
        #expect(after.map(\.1) == [.drop(.unknownReceiver)], "its session is gone")
        #expect(h.route(Packets.v4("10.0.0.1", "100.64.0.2")) == .noRoute)
        #expect(h.state.peer(relay: SocketAddress("198.18.9.1:3478")!, channel: 0x4001) == nil)
        #expect(h.state.destination(of: h.ids[0]) == nil)
        #expect(h.clientSends(1, Packets.v4("100.64.0.3", "10.0.0.1")).last?.2 == .deliver)
        #expect(h.route(Packets.v4("10.0.0.1", "100.64.0.3")) == .peer(h.ids[1]))

        // The slot is reused by a new peer: the old client's datagrams still find no session.
        let newcomer = h.addClient()
        #expect(h.ids[newcomer].slot == h.ids[0].slot)
        #expect(h.clientSends(0, Packets.v4("100.64.0.2", "10.0.0.1")).map(\.1) == [.drop(.unknownReceiver)])
        #expect(h.clientSends(newcomer, Packets.v4("100.64.0.4", "10.0.0.1")).last?.2 == .deliver)
    }

    @Test("AllowedIPs change incrementally; a prefix that moved is kept by its new owner")
    func incrementalAllowedIPs() {
        var h = TunnelHarness()
        h.addClient()
        h.addClient()
        let shared = CIDR("10.9.0.0/16")!
        h.state.setAllowedIPs([CIDR("100.64.0.2/32")!, shared], of: h.ids[0])
        #expect(h.route(Packets.v4("1.1.1.1", "10.9.1.1")) == .peer(h.ids[0]))
        h.state.setAllowedIPs([CIDR("100.64.0.3/32")!, shared], of: h.ids[1])
        #expect(h.route(Packets.v4("1.1.1.1", "10.9.1.1")) == .peer(h.ids[1]), "moved, as wg set does")
        #expect(h.state.allowedIPs(of: h.ids[0]) == [CIDR("100.64.0.2/32")!])
        h.state.removePeer(h.ids[0])
        #expect(h.route(Packets.v4("1.1.1.1", "10.9.1.1")) == .peer(h.ids[1]), "the old owner's removal leaves it")
        h.state.setAllowedIPs([CIDR("100.64.0.3/32")!], of: h.ids[1])
        #expect(h.route(Packets.v4("1.1.1.1", "10.9.1.1")) == .noRoute)
        #expect(h.state.allowedIPs.count == 1)
    }

    @Test("paths: direct and relayed destinations, channel bindings claimed and released")
    func paths() {
        var h = TunnelHarness()
        h.addClient()
        h.addClient()
        let relay = SocketAddress("198.18.9.1:3478")!
        #expect(h.state.destination(of: h.ids[0]) == nil, "roaming, never heard from")
        _ = h.clientSends(0, Packets.v4("100.64.0.2", "10.0.0.1"))
        #expect(h.state.destination(of: h.ids[0])?.address == h.clientAddress(0), "roaming follows the source")
        h.state.setPath(.direct(SocketAddress("198.18.5.5:6000")!), of: h.ids[0])
        _ = h.clientSends(0, Packets.v4("100.64.0.2", "10.0.0.1"))
        #expect(h.state.destination(of: h.ids[0])?.address == SocketAddress("198.18.5.5:6000")!,
                "an owned path does not roam")
        h.state.setPath(.relayed(relay: relay, channel: 0x4000), of: h.ids[0])
        #expect(h.state.destination(of: h.ids[0])?.channel == 0x4000)
        #expect(h.state.peer(relay: relay, channel: 0x4000) == h.ids[0])
        #expect(h.state.peer(relay: relay, channel: 0x4001) == nil)
        #expect(h.state.peer(relay: SocketAddress("198.18.9.2:3478")!, channel: 0x4000) == nil)
        h.state.setPath(.relayed(relay: relay, channel: 0x4000), of: h.ids[1])
        #expect(h.state.peer(relay: relay, channel: 0x4000) == h.ids[1], "a channel has one owner")
        #expect(h.state.path(of: h.ids[0]) == .roaming)
        h.state.setPath(.direct(SocketAddress("198.18.5.6:6000")!), of: h.ids[1])
        #expect(h.state.peer(relay: relay, channel: 0x4000) == nil, "released")
    }
}
