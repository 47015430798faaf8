#if canImport(Glibc)
import Glibc
#endif
import FZCore
import FZLinux
import FZTunnel
import Foundation
import Logging
import Synchronization
import Testing
import Tunnel
import WireGuard

/// A network namespace of the test's own, entered by one short-lived thread only: the TUN device,
/// the netlink socket and every UDP socket are created there, so they live in it whichever thread
/// uses them later. The namespace has no name and disappears when the last of them is closed:
/// nothing outside the test process can see it, and nothing is left behind on any failure.
final class PrivateNetwork: @unchecked Sendable {
    let tun: TunDevice
    let plane: UDPSocket
    let relay: UDPSocket
    let stranger: UDPSocket
    let app: UDPSocket
    let otherApp: UDPSocket
    static let tunAddress = IPv4Address(10, 77, 0, 1)
    static let clientAddress = IPv4Address(10, 77, 0, 2)

    private init(tun: TunDevice, plane: UDPSocket, relay: UDPSocket, stranger: UDPSocket, app: UDPSocket, otherApp: UDPSocket) {
        self.tun = tun
        self.plane = plane
        self.relay = relay
        self.stranger = stranger
        self.app = app
        self.otherApp = otherApp
    }

    /// Nil (with the reason) when this process may not create a namespace (needs CAP_SYS_ADMIN).
    static func make() -> Result<PrivateNetwork, TestError> {
        let result = Mutex<Result<PrivateNetwork, TestError>?>(nil)
        let thread = Thread {
            let made: Result<PrivateNetwork, TestError>
            do {
                try NetworkNamespace.enterNewNamespace()
                do {
                    let netlink = try RouteNetlinkSocket()
                    defer { netlink.close() }
                    try netlink.setLink(index: Int32(if_nametoindex("lo")), up: true, mtu: nil)
                    let tun = try TunDevice(name: "fzt0", offload: false)
                    try netlink.setLink(index: tun.index, up: false, mtu: 1420)
                    try netlink.addAddress(InterfaceAddress(ip: .v4(tunAddress), prefixLength: 24)!, index: tun.index)
                    try netlink.setLink(index: tun.index, up: true, mtu: nil)
                    let loopback = SocketAddress(IPv4Address.loopback, 0)
                    made = .success(PrivateNetwork(
                        tun: tun, plane: try UDPSocket(bindingTo: loopback), relay: try UDPSocket(bindingTo: loopback),
                        stranger: try UDPSocket(bindingTo: loopback), app: try UDPSocket(bindingTo: SocketAddress(tunAddress, 0)),
                        otherApp: try UDPSocket(bindingTo: SocketAddress(tunAddress, 0))))
                } catch {
                    made = .failure(TestError("setting up the namespace: \(error)"))
                }
            } catch {
                made = .failure(TestError("\(error)"))
            }
            result.withLock { $0 = made }
        }
        thread.start()
        while result.withLock({ $0 == nil }) { usleep(1_000) }
        return result.withLock { $0! }
    }

    func close() {
        for socket in [relay, stranger, app, otherApp] { socket.close() }
    }
}

struct TestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The data plane lives on its loop thread; the test reaches it only through `EventLoop.execute`.
final class OnLoop<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Runs `body` on the loop thread and waits for its result (bounded).
func onLoop<R: Sendable>(_ loop: EventLoop, _ body: @escaping @Sendable () -> R) -> R? {
    let box = Mutex<R?>(nil)
    loop.execute { let r = body(); box.withLock { $0 = r } }
    let end = MonotonicClock.now() + .seconds(5)
    while MonotonicClock.now() < end {
        if let r = box.withLock({ $0 }) { return r }
        usleep(1_000)
    }
    return nil
}

/// Receives one datagram within `limit`, or nil.
func receive(_ socket: UDPSocket, limit: Duration = .seconds(3)) -> (bytes: [UInt8], source: SocketAddress)? {
    var buffer = [UInt8](repeating: 0, count: 4096)
    let end = MonotonicClock.now() + limit
    while MonotonicClock.now() < end {
        let got = buffer.withUnsafeMutableBytes { try? socket.receive(into: $0) }
        if case .processed(let (n, source)) = got { return (Array(buffer[0..<n]), source) }
        usleep(1_000)
    }
    return nil
}

/// An IPv4/UDP packet with a valid header checksum and no UDP checksum (0: allowed for IPv4).
func udpPacket(from source: SocketAddress, to destination: SocketAddress, payload: [UInt8]) -> [UInt8] {
    guard case .v4(let s) = source.ip, case .v4(let d) = destination.ip else { preconditionFailure("IPv4 only") }
    let total = 28 + payload.count
    var p: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0x40, 0, 64, 17, 0, 0]
    for v in [s.value, d.value] { p += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: v >> $0) } }
    let checksum = ~p.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum($0)) }
    p[10] = UInt8(checksum >> 8)
    p[11] = UInt8(checksum & 0xFF)
    let udpLength = 8 + payload.count
    p += [UInt8(source.port >> 8), UInt8(source.port & 0xFF), UInt8(destination.port >> 8), UInt8(destination.port & 0xFF),
          UInt8(udpLength >> 8), UInt8(udpLength & 0xFF), 0, 0]
    return p + payload
}

func channelData(_ channel: UInt16, _ bytes: [UInt8]) -> [UInt8] {
    [UInt8(channel >> 8), UInt8(channel & 0xFF), UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes
}

@Suite("DataPlane: a relayed peer through ChannelData, the packet filter, the connectivity hook, removal", .serialized)
struct DataPlaneTests {
    @Test func relayedPeerEndToEnd() throws {
        let network: PrivateNetwork
        switch PrivateNetwork.make() {
        case .success(let n): network = n
        case .failure(let error):
            // Not root in a container without CAP_SYS_ADMIN: the interop suite covers the gateway.
            Issue.record("cannot build the test's namespace: \(error)")
            return
        }
        defer { network.close() }

        let gatewayKey = PrivateKey.generate(), clientKey = PrivateKey.generate()
        let wall = WallClock(anchor: TAI64N(unixSeconds: 1_800_000_000, nanoseconds: 0), at: MonotonicClock.now())
        let channel: UInt16 = 0x4001
        let appAddress = network.app.localAddress
        let filter = PacketFilter(rules: [.init(destination: CIDR(address: .v4(PrivateNetwork.tunAddress), prefixLength: 32)!,
                                                protocols: .udp(appAddress.port...appAddress.port))])
        var state = TunnelState(device: Device(privateKey: gatewayKey, wallClock: wall))
        let added = state.addPeer(
            PeerConfiguration(publicKey: clientKey.publicKey), allowedIPs: [CIDR("10.77.0.2/32")!],
            path: .relayed(relay: network.relay.localAddress, channel: channel), filter: filter)
        let peer = try #require(added)

        let loop = try EventLoop()
        let plane = DataPlane(state: state, tun: network.tun, socketV4: network.plane, socketV6: nil, mtu: 1420,
                              logger: Logger(label: "test"))
        let handedOver = Mutex<[(bytes: [UInt8], source: SocketAddress)]>([])
        plane.connectivity = { bytes, source, _ in handedOver.withLock { $0.append((Array(bytes), source)) }; return .consumed }
        try plane.attach(to: loop)
        let thread = try loop.start(name: "fzt-loop")
        let confined = OnLoop(plane)
        defer {
            loop.stop()
            thread.join()
            plane.close(loop: loop)
        }
        func counters() -> TunnelCounters? { onLoop(loop) { confined.value.counters } }

        // The client side: a WireGuard peer reached only through the relay socket.
        var client = Peer(localKey: clientKey, configuration: PeerConfiguration(publicKey: gatewayKey.publicKey),
                          wallClock: WallClock(anchor: TAI64N(unixSeconds: 1_800_000_000, nanoseconds: 0), at: MonotonicClock.now()))
        let clientEndpoint = SocketAddress(PrivateNetwork.clientAddress, 5555)
        var buffer = [UInt8](repeating: 0, count: 4096)
        func relayToPlane(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { _ = try network.relay.send($0, to: network.plane.localAddress) } }

        let first = udpPacket(from: clientEndpoint, to: appAddress, payload: Array("through the relay".utf8))
        guard case .handshakeInitiation(let n) = client.encapsulate(first, into: &buffer, now: MonotonicClock.now()) else {
            Issue.record("expected a handshake initiation")
            return
        }
        try relayToPlane(channelData(channel, Array(buffer[0..<n])))

        // The response comes back through the relay, as ChannelData on the peer's channel.
        let response = try #require(receive(network.relay), "no handshake response through the relay")
        #expect(response.source == network.plane.localAddress)
        #expect(Array(response.bytes[0..<2]) == [0x40, 0x01])
        #expect(Int(response.bytes[2]) << 8 | Int(response.bytes[3]) == response.bytes.count - 4)
        var out = [UInt8](repeating: 0, count: 4096)
        guard case .handshakeCompleted(let m) = client.decapsulate(Array(response.bytes[4...]), from: network.relay.localAddress,
                                                                    into: &out, now: MonotonicClock.now()) else {
            Issue.record("the relayed handshake response did not complete the handshake")
            return
        }
        try relayToPlane(channelData(channel, Array(out[0..<m])))

        // The queued first packet went through the filter to the application socket.
        let delivered = try #require(receive(network.app), "the first packet did not reach the resource: \(counters()?.summary ?? "")")
        #expect(delivered.bytes == Array("through the relay".utf8))
        #expect(delivered.source == clientEndpoint)

        // And back: the application answers, the data plane relays it as ChannelData.
        try Array("answer".utf8).withUnsafeBytes { _ = try network.app.send($0, to: clientEndpoint) }
        let answer = try #require(receive(network.relay), "the answer did not leave through the relay")
        #expect(Array(answer.bytes[0..<2]) == [0x40, 0x01])
        guard case .packet(let range) = client.decapsulate(Array(answer.bytes[4...]), from: network.relay.localAddress,
                                                           into: &out, now: MonotonicClock.now()) else {
            Issue.record("the relayed answer did not decrypt")
            return
        }
        #expect(Array(out[range].suffix(6)) == Array("answer".utf8))

        // The filter: another port on the same host is not allowed.
        let refused = udpPacket(from: clientEndpoint, to: network.otherApp.localAddress, payload: [1, 2, 3])
        guard case .datagram(let r) = client.encapsulate(refused, into: &buffer, now: MonotonicClock.now()) else {
            Issue.record("expected a transport datagram")
            return
        }
        try relayToPlane(channelData(channel, Array(buffer[0..<r])))
        #expect(waitUntil { counters()?.droppedFiltered == 1 })
        #expect(receive(network.otherApp, limit: .milliseconds(200)) == nil)

        // STUN and ChannelData on a channel nobody claimed go to the connectivity hook.
        var stun = [UInt8](repeating: 0, count: 20)
        stun[1] = 0x01
        stun[4] = 0x21; stun[5] = 0x12; stun[6] = 0xA4; stun[7] = 0x42
        try stun.withUnsafeBytes { _ = try network.stranger.send($0, to: network.plane.localAddress) }
        try channelData(0x4002, [9, 9]).withUnsafeBytes { _ = try network.relay.send($0, to: network.plane.localAddress) }
        #expect(waitUntil { handedOver.withLock { $0.count } == 2 })
        let seen = handedOver.withLock { $0 }
        #expect(seen.first?.bytes == stun)
        #expect(seen.first?.source == network.stranger.localAddress)
        #expect(seen.last?.bytes == channelData(0x4002, [9, 9]))

        // Removed mid-traffic: its prefix routes nowhere, its datagrams find no session.
        _ = onLoop(loop) { confined.value.removePeer(peer); return true }
        try Array("late".utf8).withUnsafeBytes { _ = try network.app.send($0, to: clientEndpoint) }
        #expect(waitUntil { counters()?.droppedNoRoute ?? 0 >= 1 })
        #expect(receive(network.relay, limit: .milliseconds(200)) == nil)
        let late = udpPacket(from: clientEndpoint, to: appAddress, payload: [7])
        guard case .datagram(let l) = client.encapsulate(late, into: &buffer, now: MonotonicClock.now()) else {
            Issue.record("expected a transport datagram")
            return
        }
        try relayToPlane(channelData(channel, Array(buffer[0..<l])))
        #expect(waitUntil { handedOver.withLock { $0.count } == 3 }, "its channel is unclaimed now: the hook gets it")
        #expect(receive(network.app, limit: .milliseconds(200)) == nil)
        let last = counters()
        let final = try #require(last)
        #expect(final.channelDataReceived >= 3)
        #expect(final.channelDataSent >= 2)
    }
}

/// Polls `condition` every millisecond until it holds or `limit` passes (bounded: a broken data
/// plane fails the test instead of hanging it).
func waitUntil(limit: Duration = .seconds(5), _ condition: () -> Bool) -> Bool {
    let end = MonotonicClock.now() + limit
    while !condition() {
        if MonotonicClock.now() >= end { return false }
        usleep(1_000)
    }
    return true
}
