import FZCore
import FZDaemon
import FZLinux
import Logging
import STUN
import Tunnel
import WireGuard

/// The WireGuard data plane for many peers that come and go: one TUN interface, one UDP socket
/// per address family shared with the connectivity engine, the pure `TunnelState` (the `Device`,
/// AllowedIPs, per-peer paths and packet filters), all driven by one `EventLoop` on its own thread.
///
/// TUN → destination → AllowedIPs (longest prefix) → `Peer.encapsulate` → the peer's path → UDP,
/// and UDP → demultiplexed (RFC 7983: WireGuard, ChannelData, STUN) → `Device.decapsulate` →
/// inner source checked against that peer's AllowedIPs, destination against its packet filter →
/// TUN.
///
/// Paths (`PeerPath`): in the static-peer mode a peer roams (its endpoint follows the source of
/// its authenticated packets, §2.1); a peer the connectivity engine owns is sent to the address it
/// chose (`direct`), or through a TURN relay as ChannelData (`relayed`): the 4-byte header is
/// written into headroom in front of the WireGuard message, so relaying costs no copy. Inbound
/// ChannelData on a relayed peer's (relay, channel) is unwrapped in place and decrypted; every
/// other non-WireGuard datagram (STUN: ICE checks, TURN responses; ChannelData nobody claimed)
/// goes to the `connectivity` hook, which may answer through `send(_:to:)` on the same socket.
///
/// Peers change at run time (`addPeer`, `removePeer`, `setAllowedIPs`, `setPath`, `setFilter`):
/// every change is incremental, and the device's timer schedule finds the next deadline in O(1)
/// however many peers are idle.
///
/// Buffers: TUN packets are read into a preallocated slab with 20 bytes of headroom (ChannelData
/// and WireGuard headers), encrypted in place and handed to `SendQueue` as gather entries (no
/// copy), flushed before the slab is reused.
/// Incoming datagrams arrive in a `ReceivePool` and are decrypted into one scratch buffer, then
/// written to the TUN interface. Nothing on these paths allocates, except the core's queue of
/// packets that wait for a handshake.
///
/// Offloads (when the TUN device has the virtio header, `TunDevice(offload: true)`): a TUN read may
/// be one TCP segment of up to 64 KiB (TSO); `TCPSegmenter` cuts it into MTU-sized packets straight
/// into the slab, each is encrypted in place, and the equal-sized datagrams to one endpoint leave
/// as one UDP GSO message (`SendQueue(segmentation:)`). The other way, the sockets read with UDP
/// GRO (one read, many datagrams of one sender), and `TCPCoalescer` merges the decrypted TCP
/// segments of one flow into one TUN write with a GSO virtio header, so the kernel's TCP stack
/// handles one packet where it would have handled dozens. This is what the kernel does for a NIC,
/// and what wireguard-go and Tailscale do in userspace. Nothing changes on the wire.
///
/// Handshake floods (whitepaper §5.3): every handshake message with a valid MAC1 is counted by a
/// `HandshakeLoadMonitor`; while it reports load, `Device.underLoad` is set, so the core answers
/// messages without a valid MAC2 with a 64-byte cookie reply (no Curve25519 work) and passes the
/// ones with a valid MAC2 through its per-source `HandshakeRateLimiter` (20/s, burst 5). Entering
/// and leaving that state is logged, and everything is counted (`TunnelCounters`, `Device`).
///
/// Loop-confined: every method runs on the loop thread (or before the loop starts).
public final class DataPlane {
    public private(set) var state: TunnelState
    public var device: Device { state.device }
    public private(set) var counters = TunnelCounters()
    public private(set) var load: HandshakeLoadMonitor
    public let tun: TunDevice
    public let socketV4: UDPSocket?
    public let socketV6: UDPSocket?

    private let logger: Logger
    private let batch = 64
    private let slotStride: Int
    private let tunSlab: UnsafeMutableRawPointer
    private let scratch: UnsafeMutableRawBufferPointer
    private let pool: ReceivePool
    private let queueV4: SendQueue
    private let queueV6: SendQueue
    /// With offloads: one TUN read (virtio header + up to 64 KiB), and the receive-side coalescer.
    private let tunReadBuffer: UnsafeMutableRawBufferPointer?
    private var coalescer: TCPCoalescer
    /// A virtio header to write in front of each TUN write.
    private let virtioHeader: UnsafeMutableRawBufferPointer
    private var isClosed = false
    /// systemd's watchdog, set before `attach`: the loop thread beats and pings it from its
    /// housekeeping, so a loop that hangs stops the pings and systemd restarts the gateway.
    public var watchdog: Watchdog?
    /// Where housekeeping publishes the counters for `/metrics` (`--metrics-listen`), set before
    /// `attach`; called on the loop thread once a second.
    public var metrics: (@Sendable (TunnelSnapshot) -> Void)?
    /// Non-WireGuard datagrams (STUN, unclaimed ChannelData, STUN inside a relayed peer's
    /// ChannelData), on the loop thread, for the connectivity engine; the bytes are valid only
    /// during the call. The engine may answer that the datagram carried a peer's WireGuard
    /// message it unwrapped (`.wireGuard`), which the data plane then decrypts. Nil: they are
    /// dropped and counted (`droppedNotWireGuard`).
    public var connectivity: ((UnsafeRawBufferPointer, SocketAddress, Timestamp) -> ConnectivityVerdict)?
    /// Packets read from TUN that no peer's AllowedIPs cover, on the loop thread, before they are
    /// dropped and counted (`droppedNoRoute`); the bytes are valid only during the call. The
    /// client holds those to a resource it has no tunnel for yet and asks the portal for access.
    public var unrouted: ((UnsafeRawBufferPointer) -> Void)?
    /// Timers beside the data plane's own (the connectivity engine's), on the loop thread; set before `attach`.
    public var companion: (any DataPlaneCompanion)?
    /// Bytes in front of each WireGuard message: room for a ChannelData header.
    static let channelHeadroom = ChannelData.headerSize
    /// Offset of the plaintext in a slab slot: ChannelData header, then the 16-byte WireGuard header.
    static let plaintextOffset = channelHeadroom + 16
    private var nextHousekeeping: Timestamp = .distantFuture
    /// Device counters when the current under-load episode began, for its log line.
    private var episodeStart: (at: Timestamp, cookies: UInt64, limited: UInt64, handshakes: UInt64)?

    /// - Parameters:
    ///   - mtu: the TUN MTU; buffers are sized from it.
    ///   - load: when the gateway counts as under load (handshake flood protection).
    public init(state: TunnelState, tun: TunDevice, socketV4: UDPSocket?,
                socketV6: UDPSocket?, mtu: Int, load: HandshakeLoadMonitor = HandshakeLoadMonitor(), logger: Logger) {
        precondition(socketV4 != nil || socketV6 != nil, "the data plane needs a UDP socket")
        self.load = load
        self.state = state
        self.tun = tun
        self.socketV4 = socketV4
        self.socketV6 = socketV6
        self.logger = logger
        // 4-byte ChannelData headroom + 16-byte header + packet padded to 16 + 16-byte tag, rounded
        // to cache lines.
        slotStride = (mtu + Self.plaintextOffset + 16 + 16 + 63) & ~63
        tunSlab = .allocate(byteCount: slotStride * batch, alignment: 64)
        let datagramCapacity = max(2048, slotStride + 64)
        scratch = .allocate(byteCount: datagramCapacity, alignment: 16)
        let offload = tun.hasVirtioHeader
        // UDP GRO needs 64 KiB slots (a coalesced read is up to 64 KiB); only with offloads on.
        let gro = offload && SocketOptions.supportsUDPGRO
        pool = ReceivePool(count: batch, capacity: gro ? 65_535 : datagramCapacity, headroom: 0, coalescing: gro)
        if gro {
            for socket in [socketV4, socketV6] {
                guard let socket else { continue }
                try? SocketOptions.setUDPGRO(socket, enabled: true)
            }
        }
        queueV4 = SendQueue(count: batch * 2, capacity: datagramCapacity, segmentation: offload)
        queueV6 = SendQueue(count: batch * 2, capacity: datagramCapacity, segmentation: offload)
        // Room for the largest GSO packet (64 KiB plus headers) and more: a read that fills the
        // buffer may have been cut, and is dropped rather than segmented with fresh checksums.
        tunReadBuffer = offload ? .allocate(byteCount: VirtioNetHeader.size + 65_536 + 1_024, alignment: 16) : nil
        coalescer = TCPCoalescer(capacity: 65_535)
        virtioHeader = .allocate(byteCount: VirtioNetHeader.size, alignment: 8)
        virtioHeader.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        tunSlab.deallocate()
        scratch.deallocate()
        tunReadBuffer?.deallocate()
        virtioHeader.deallocate()
    }

    /// Registers the descriptors and timers with `loop`. Call before the loop runs.
    public func attach(to loop: EventLoop) throws(SystemError) {
        try loop.register(fd: tun.fd) { [unowned self] _ in self.readTun() }
        if let s = socketV4 { try loop.register(fd: s.fd) { [unowned self] _ in self.readSocket(s) } }
        if let s = socketV6 { try loop.register(fd: s.fd) { [unowned self] _ in self.readSocket(s) } }
        if watchdog?.interval != nil || metrics != nil {
            nextHousekeeping = MonotonicClock.now() + (watchdog?.beatPeriod ?? .seconds(1))
        }

        loop.deadlineProvider = { [unowned self] in
            // While under load, also wake up when it ends, to log that and clear the flag.
            min(self.state.device.nextDeadline, self.state.device.underLoad ? self.load.until : .distantFuture,
                self.nextHousekeeping, self.companion?.nextDeadline ?? .distantFuture)
        }
        loop.timeoutHandler = { [unowned self] now in
            self.handleTimers(now: now)
            if let companion = self.companion, companion.nextDeadline <= now { companion.handleTimeout(now: now) }
        }
        loop.afterIterationHandler = { [unowned self] in self.flush() }
    }

    /// Unregisters and closes everything; closing the TUN descriptor removes the interface.
    public func close(loop: EventLoop) {
        guard !isClosed else { return }
        isClosed = true
        loop.unregister(fd: tun.fd)
        if let s = socketV4 { loop.unregister(fd: s.fd); s.close() }
        if let s = socketV6 { loop.unregister(fd: s.fd); s.close() }
        tun.close()
        pool.deallocate()
        queueV4.deallocate()
        queueV6.deallocate()
    }

    // MARK: peers (loop thread: the control side hands changes over with `EventLoop.execute`)

    /// Adds a peer; nil if its key is already configured (see `TunnelState.addPeer`).
    @discardableResult
    public func addPeer(_ configuration: PeerConfiguration, allowedIPs: [CIDR], path: PeerPath = .roaming,
                        filter: PacketFilter = .allowAll) -> PeerID? {
        state.addPeer(configuration, allowedIPs: allowedIPs, path: path, filter: filter)
    }

    /// Removes a peer mid-traffic: from the next packet on, its prefixes route nowhere and its
    /// datagrams find no session.
    public func removePeer(_ id: PeerID) { state.removePeer(id) }
    public func setAllowedIPs(_ prefixes: [CIDR], of id: PeerID) { state.setAllowedIPs(prefixes, of: id) }
    /// Moves the peer to another path (a nominated ICE pair, a failover to a relay).
    public func setPath(_ path: PeerPath, of id: PeerID) { state.setPath(path, of: id) }
    public func setFilter(_ filter: PacketFilter, of id: PeerID) { state.setFilter(filter, of: id) }

    /// Sends a datagram of the connectivity engine's (STUN, ChannelData it framed) on the shared
    /// socket of `destination`'s family; copied, so the bytes may be reused at once.
    @discardableResult
    public func send(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress) -> Bool {
        enqueue(bytes, to: destination)
    }

    /// Sends IP packets as if read from TUN (held ones, once their tunnel is up): routed,
    /// encrypted and queued; packets that still have no route are counted as `droppedNoRoute`
    /// (without calling `unrouted` again). Loop thread; copied, so the bytes may be reused.
    public func sendOutgoing(_ packets: [[UInt8]]) {
        flush()
        let now = MonotonicClock.now()
        let capacity = slotStride - Self.plaintextOffset - 16
        var used = 0
        for packet in packets {
            guard packet.count <= capacity else {
                counters.droppedMalformedOutgoing &+= 1
                continue
            }
            let peer: PeerID
            switch packet.withUnsafeBytes({ state.route($0) }) {
            case .peer(let p): peer = p
            case .noRoute: counters.droppedNoRoute &+= 1; continue
            case .malformed: counters.droppedMalformedOutgoing &+= 1; continue
            }
            if used == batch { flush(); used = 0 }
            let slot = tunSlab + used * slotStride
            packet.withUnsafeBytes { (slot + Self.plaintextOffset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            if encapsulateSlot(slot, length: packet.count, peer: peer, now: now) { used += 1 }
        }
        flush()
    }

    /// Writes an IP packet to TUN as if it came out of the tunnel (an ICMP unreachable or TCP RST
    /// the client makes up for a denied resource). Loop thread.
    public func writeInbound(_ packet: UnsafeRawBufferPointer) {
        writeTun(packet, header: tun.hasVirtioHeader ? VirtioNetHeader() : nil)
    }

    /// Datagrams dropped by the send queues (socket buffer full, unreachable...).
    public var udpSendDropped: Int { queueV4.totalDropped + queueV6.totalDropped }

    // MARK: TUN → UDP

    func readTun() {
        flush()
        if tunReadBuffer != nil {
            readTunOffloaded()
            return
        }
        let now = MonotonicClock.now()
        var used = 0
        var reads = 0
        while used < batch, reads < batch * 2 {
            reads += 1
            let slot = tunSlab + used * slotStride
            let packetArea = UnsafeMutableRawBufferPointer(start: slot + Self.plaintextOffset,
                                                           count: slotStride - Self.plaintextOffset - 16)
            let n: Int
            do {
                guard case .processed(let count) = try tun.read(into: packetArea) else { break }
                n = count
            } catch {
                logger.error("reading the TUN interface failed", metadata: ["error": "\(error)"])
                break
            }
            counters.tunPacketsRead &+= 1
            guard let peer = route(UnsafeRawBufferPointer(start: slot + Self.plaintextOffset, count: n)) else { continue }
            if encapsulateSlot(slot, length: n, peer: peer, now: now) { used += 1 }
        }
        flush()
    }

    /// `readTun` for a device with the virtio header: each read is a header and one packet, which
    /// may be a TSO segment to cut into MTU-sized packets. Every packet lands in a slab slot with 16
    /// bytes of headroom and is encrypted there; the slab is flushed when full.
    private func readTunOffloaded() {
        guard let buffer = tunReadBuffer else { return }
        let now = MonotonicClock.now()
        var used = 0
        var reads = 0
        let plaintextCapacity = slotStride - Self.plaintextOffset - 16
        while reads < batch {
            reads += 1
            let n: Int
            do {
                guard case .processed(let count) = try tun.read(into: buffer) else { break }
                n = count
            } catch {
                logger.error("reading the TUN interface failed", metadata: ["error": "\(error)"])
                break
            }
            guard n > VirtioNetHeader.size, n < buffer.count,
                  let header = VirtioNetHeader(UnsafeRawBufferPointer(rebasing: buffer[0..<VirtioNetHeader.size]))
            else {
                counters.droppedMalformedOutgoing &+= 1
                continue
            }
            let packet = UnsafeMutableRawBufferPointer(rebasing: buffer[VirtioNetHeader.size..<n])
            counters.tunPacketsRead &+= 1
            let single = header.gsoType == VirtioNetHeader.gsoNone
            // The checksum first: a packet handed to `unrouted` (and held) must be complete.
            if single, header.flags & VirtioNetHeader.needsChecksum != 0,
               !InternetChecksum.completePartialChecksum(packet, start: Int(header.checksumStart), offset: Int(header.checksumOffset))
            {
                counters.droppedMalformedOutgoing &+= 1
                continue
            }
            // A TSO super-packet is never a connection's first packet: not worth holding.
            guard let peer = route(UnsafeRawBufferPointer(packet), notify: single) else { continue }
            if single {
                guard packet.count <= plaintextCapacity else {
                    counters.droppedMalformedOutgoing &+= 1
                    continue
                }
                if used == batch { flush(); used = 0 }
                let slot = tunSlab + used * slotStride
                (slot + Self.plaintextOffset).copyMemory(from: packet.baseAddress!, byteCount: packet.count)
                if encapsulateSlot(slot, length: packet.count, peer: peer, now: now) { used += 1 }
                continue
            }
            let segmenter: TCPSegmenter
            do {
                segmenter = try TCPSegmenter(header: header, packet: UnsafeRawBufferPointer(packet))
            } catch {
                counters.droppedMalformedOutgoing &+= 1
                continue
            }
            guard segmenter.maximumSegmentSize <= plaintextCapacity else {
                counters.droppedMalformedOutgoing &+= 1
                continue
            }
            counters.tunSuperPacketsRead &+= 1
            counters.tunSegmentsCut &+= UInt64(segmenter.segmentCount)
            for index in 0..<segmenter.segmentCount {
                if used == batch { flush(); used = 0 }
                let slot = tunSlab + used * slotStride
                let length = segmenter.writeSegment(
                    index, into: UnsafeMutableRawBufferPointer(start: slot + Self.plaintextOffset, count: plaintextCapacity))
                if encapsulateSlot(slot, length: length, peer: peer, now: now) { used += 1 }
            }
        }
        flush()
    }

    /// Encrypts the plaintext at `slot + plaintextOffset` in place (the WireGuard message starts
    /// at `slot + channelHeadroom`) and queues it uncopied, behind a ChannelData header written
    /// into the headroom when the peer is relayed. True if the slot is now referenced by a send
    /// queue (it must not be reused before the next flush).
    @inline(__always)
    private func encapsulateSlot(_ slot: UnsafeMutableRawPointer, length: Int, peer: PeerID, now: Timestamp) -> Bool {
        let message = slot + Self.channelHeadroom
        let out = UnsafeMutableRawBufferPointer(start: message, count: slotStride - Self.channelHeadroom)
        let plaintext = UnsafeRawBufferPointer(start: slot + Self.plaintextOffset, count: length)
        switch state.device[peer].encapsulate(plaintext, into: out, now: now) {
        case .datagram(let n), .handshakeInitiation(let n):
            guard let (destination, channel) = state.destination(of: peer) else {
                counters.droppedNoEndpoint &+= 1
                return false
            }
            guard let channel else {
                return enqueueInPlace(UnsafeRawBufferPointer(start: message, count: n), to: destination)
            }
            ChannelData.writeHeader(channel: channel, length: n, to: slot)
            counters.channelDataSent &+= 1
            return enqueueInPlace(UnsafeRawBufferPointer(start: slot, count: Self.channelHeadroom + n), to: destination)
        case .queued, .drop:
            return false
        }
    }

    /// The peer for an outgoing packet's destination; counts the drop when there is none.
    @inline(__always)
    private func route(_ packet: UnsafeRawBufferPointer, notify: Bool = true) -> PeerID? {
        switch state.route(packet) {
        case .peer(let peer):
            return peer
        case .noRoute:
            counters.droppedNoRoute &+= 1
            if notify { unrouted?(packet) }
        case .malformed:
            counters.droppedMalformedOutgoing &+= 1
        }
        return nil
    }

    // MARK: UDP → TUN

    func readSocket(_ socket: UDPSocket) {
        let received: Int
        do {
            received = try pool.receive(from: socket)
        } catch {
            logger.error("receiving from the UDP socket failed", metadata: ["error": "\(error)"])
            return
        }
        guard received > 0 else { return }
        let now = MonotonicClock.now()
        for i in 0..<received {
            if pool.truncated(i) {
                counters.droppedTruncated &+= 1
                continue
            }
            let source = pool.source(i)
            pool.forEachSegment(i) { datagram in
                receiveDatagram(UnsafeRawBufferPointer(datagram), from: source, now: now)
            }
        }
        flushCoalescer()
        flush()
    }

    /// Demultiplexes one datagram (RFC 7983 by its first byte): WireGuard (types 1-4) to the
    /// device; ChannelData on a relayed peer's channel unwrapped and then to the device; the rest
    /// to the connectivity hook.
    @inline(__always)
    private func receiveDatagram(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress, now: Timestamp) {
        switch PacketKind.classify(datagram) {
        case .other:
            receiveWireGuard(datagram, from: source, channel: nil, now: now)
        case .channelData:
            let channel = UInt16(datagram[0]) << 8 | UInt16(datagram[1])
            guard state.peer(relay: source, channel: channel) != nil else {
                handOver(datagram, from: source, now: now)
                return
            }
            let length = Int(UInt16(datagram[2]) << 8 | UInt16(datagram[3]))
            guard Self.channelHeadroom + length <= datagram.count else {
                counters.droppedMalformedChannelData &+= 1
                return
            }
            let inner = UnsafeRawBufferPointer(rebasing: datagram[Self.channelHeadroom..<(Self.channelHeadroom + length)])
            // ICE consent checks travel the relayed path too: STUN (the magic cookie) is the engine's.
            if PacketKind.classify(inner) == .stun {
                handOver(datagram, from: source, now: now)
                return
            }
            counters.channelDataReceived &+= 1
            receiveWireGuard(inner, from: source, channel: channel, now: now)
        case .stun:
            handOver(datagram, from: source, now: now)
        }
    }

    @inline(__always)
    private func handOver(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress, now: Timestamp) {
        guard let connectivity else {
            counters.droppedNotWireGuard &+= 1
            return
        }
        counters.connectivityDatagrams &+= 1
        switch connectivity(datagram, source, now) {
        case .consumed:
            break
        case .wireGuard(let payload, let relay, let channel):
            guard payload.lowerBound >= 0, payload.upperBound <= datagram.count else { return }
            counters.channelDataReceived &+= 1
            receiveWireGuard(UnsafeRawBufferPointer(rebasing: datagram[payload]), from: relay, channel: channel,
                             unclaimed: true, now: now)
        }
    }

    /// One WireGuard message, straight from `source` or (`channel` set) unwrapped from ChannelData
    /// that relay sent: a handshake or cookie reply goes back the way the message came.
    @inline(__always)
    /// `unclaimed`: it came through the connectivity hook, not on a channel a peer owns.
    private func receiveWireGuard(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress, channel: UInt16?,
                                  unclaimed: Bool = false, now: Timestamp) {
        let handshake = Self.isHandshakeMessage(datagram)
        if handshake { updateLoadState(now: now) }
        let (peer, result) = state.device.decapsulate(datagram, from: source, into: scratch, now: now)
        if handshake, result != .drop(.invalidMAC1), result != .drop(.malformed) {
            // A valid MAC1: without the cookie mechanism this would cost a Curve25519 computation.
            counters.handshakeMessagesReceived &+= 1
            load.record(now: now)
        }
        // A peer that has no path yet (ICE has not selected one on this side) and speaks to us
        // through a relay channel is answered through it: its roaming endpoint alone would be the
        // relay's address without the channel, where a bare WireGuard datagram is dropped.
        // Only for datagrams the hook unwrapped: a channel a peer owns is already its path.
        if unclaimed, let peer, let channel, result.isAuthenticated, case .roaming? = state.path(of: peer) {
            state.setPath(.relayed(relay: source, channel: channel), of: peer)
        }
        switch result {
        case .packet(let range):
            deliver(UnsafeRawBufferPointer(rebasing: scratch[range]), from: peer!)
        case .handshakeResponse(let n), .cookieReply(let n):
            enqueue(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), to: source, channel: channel)
        case .handshakeCompleted(let n):
            logger.info("handshake completed", metadata: ["peer": "\(state.device[peer!].publicKey)", "endpoint": "\(source)"])
            send(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), peer: peer!)
        case .keepalive, .cookieAccepted, .drop:
            break
        }
        if let peer, state.device[peer].queuedPacketCount > 0 { drainQueue(of: peer, now: now) }
    }

    /// Checks the inner source against the sending peer's AllowedIPs and the destination against
    /// its packet filter, and writes the packet to TUN.
    @inline(__always)
    private func deliver(_ packet: UnsafeRawBufferPointer, from peer: PeerID) {
        switch state.admit(packet, from: peer) {
        case .deliver:
            break
        case .sourceNotAllowed:
            counters.droppedSourceNotAllowed &+= 1
            return
        case .filtered:
            counters.droppedFiltered &+= 1
            return
        case .malformed:
            counters.droppedMalformedIncoming &+= 1
            return
        }
        guard tun.hasVirtioHeader else {
            writeTun(packet)
            return
        }
        // Only packets that passed the checks above reach the coalescer, so every segment of a
        // coalesced write came from this peer's authenticated packets.
        coalescer.push(packet) { header, bytes in writeTun(bytes, header: header) }
    }

    /// Writes what the coalescer still holds (the end of a receive batch).
    private func flushCoalescer() {
        guard tun.hasVirtioHeader else { return }
        coalescer.flush { header, bytes in writeTun(bytes, header: header) }
    }

    @inline(__always)
    private func writeTun(_ packet: UnsafeRawBufferPointer, header: VirtioNetHeader? = nil) {
        do {
            let result: IOResult<Int>
            if let header {
                header.write(to: virtioHeader.baseAddress!)
                result = try tun.write(header: UnsafeRawBufferPointer(virtioHeader), packet: packet)
                if header.gsoType != VirtioNetHeader.gsoNone { counters.tunSuperPacketsWritten &+= 1 }
            } else {
                result = try tun.write(packet)
            }
            switch result {
            case .processed: counters.tunPacketsWritten &+= 1
            case .wouldBlock: counters.droppedTunWrite &+= 1
            }
        } catch {
            counters.droppedTunWrite &+= 1
        }
    }

    private func drainQueue(of peer: PeerID, now: Timestamp) {
        while let n = state.device[peer].nextQueuedDatagram(into: scratch, now: now) {
            send(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), peer: peer)
        }
    }

    // MARK: handshake load (§5.3)

    /// An initiation or response by type byte and size (the core checks the rest).
    @inline(__always)
    static func isHandshakeMessage(_ datagram: UnsafeRawBufferPointer) -> Bool {
        switch datagram.count {
        case 148: datagram[0] == 1
        case 92: datagram[0] == 2
        default: false
        }
    }

    /// Sets `Device.underLoad` from the load monitor; logs and counts the transitions.
    func updateLoadState(now: Timestamp) {
        let underLoad = load.isUnderLoad(now: now)
        guard underLoad != state.device.underLoad else { return }
        state.device.underLoad = underLoad
        let cookies = state.device.cookieRepliesSent, limited = state.device.dropped[.rateLimited]
        if underLoad {
            counters.underLoadEpisodes &+= 1
            episodeStart = (now, cookies, limited, counters.handshakeMessagesReceived)
            logger.notice(
                "handshake load: under load (cookie replies for handshakes without a valid MAC2, per-source rate limit)",
                metadata: ["threshold": "more than \(load.threshold) per \(load.window)", "hold": "\(load.hold)"])
        } else {
            var metadata: Logger.Metadata = [:]
            if let start = episodeStart {
                let elapsed = now - start.at
                counters.underLoadNanoseconds &+= UInt64(max(0, elapsed.nanosecondsClamped))
                metadata = [
                    "duration": "\(elapsed)",
                    "handshake-messages": "\(counters.handshakeMessagesReceived - start.handshakes)",
                    "cookie-replies": "\(cookies - start.cookies)", "rate-limited": "\(limited - start.limited)",
                ]
            }
            episodeStart = nil
            logger.notice("handshake load: back to normal", metadata: metadata)
        }
    }

    // MARK: timers

    func handleTimers(now: Timestamp) {
        if now >= nextHousekeeping { housekeeping(now: now) }
        if state.device.underLoad { updateLoadState(now: now) }
        for (peer, action) in state.device.handleTimeout(now: now) {
            switch action {
            case .sendHandshakeInitiation(let bytes), .sendKeepalive(let bytes):
                bytes.withUnsafeBytes { _ = send($0, peer: peer) }
            case .handshakeGaveUp(let dropped):
                logger.notice("handshake gave up", metadata: ["peer": "\(device[peer].publicKey)", "dropped": "\(dropped)"])
            case .keysErased:
                logger.info("session keys erased after inactivity", metadata: ["peer": "\(device[peer].publicKey)"])
            }
        }
        flush()
    }

    /// The watchdog's heartbeat and ping, and the metrics snapshot: once a second, or at a
    /// quarter of the watchdog interval when that is shorter.
    private func housekeeping(now: Timestamp) {
        nextHousekeeping = now + (watchdog?.beatPeriod ?? .seconds(1))
        if let watchdog {
            watchdog.beat(loop: 0, now: now)
            watchdog.pingIfDue(now: now)
        }
        if let metrics { metrics(snapshot(now: now)) }
    }

    /// The counters as `/metrics` shows them (allocates: once a second, never per packet).
    func snapshot(now: Timestamp) -> TunnelSnapshot {
        var s = TunnelSnapshot()
        s.counters = counters
        s.udpSendDropped = UInt64(udpSendDropped)
        let device = state.device
        s.deviceDropped = device.dropped
        s.cookieRepliesSent = device.cookieRepliesSent
        s.underLoad = device.underLoad
        let wall = RealtimeClock.now()
        let unixNow = Double(wall.seconds) + Double(wall.nanoseconds) / 1e9
        for id in device.peerIDs {
            let peer = device[id]
            let last = peer.lastHandshake.map { unixNow - Double((now - $0).nanosecondsClamped) / 1e9 }
            var entry = TunnelSnapshot.PeerEntry(publicKey: peer.publicKey.base64, stats: peer.stats, lastHandshakeUnixSeconds: last)
            switch state.path(of: id) {
            case .direct?: entry.path = "direct"
            case .relayed?: entry.path = "relayed"
            case .roaming?, nil: entry.path = "roaming"
            }
            s.peers.append(entry)
        }
        return s
    }

    // MARK: sending

    /// Queues a WireGuard message to the peer's path, copied into the queue (behind a
    /// ChannelData header when relayed). False if dropped.
    @discardableResult
    private func send(_ bytes: UnsafeRawBufferPointer, peer: PeerID) -> Bool {
        guard let (destination, channel) = state.destination(of: peer) else {
            counters.droppedNoEndpoint &+= 1
            return false
        }
        return enqueue(bytes, to: destination, channel: channel)
    }

    /// Queues a copy of `bytes` to `destination`, as ChannelData on `channel` when there is one.
    @discardableResult
    private func enqueue(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress, channel: UInt16?) -> Bool {
        guard let channel else { return enqueue(bytes, to: destination) }
        guard let (queue, socket) = queue(for: destination) else { return false }
        let length = Self.channelHeadroom + bytes.count
        guard length <= queue.capacity else { return false }
        counters.channelDataSent &+= 1
        let fill = { (slot: UnsafeMutableRawBufferPointer) in
            ChannelData.writeHeader(channel: channel, length: bytes.count, to: slot.baseAddress!)
            (slot.baseAddress! + Self.channelHeadroom).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
        if queue.enqueue(to: destination, length: length, fill) { return true }
        queue.flush(on: socket)
        return queue.enqueue(to: destination, length: length, fill)
    }

    /// Queues bytes that stay in the slab until the next flush (not copied).
    @inline(__always)
    private func enqueueInPlace(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress) -> Bool {
        guard let (queue, socket) = queue(for: destination) else { return false }
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        if queue.enqueue(header: empty, payload: bytes, to: destination) { return true }
        queue.flush(on: socket)
        return queue.enqueue(header: empty, payload: bytes, to: destination)
    }

    @discardableResult
    private func enqueue(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress) -> Bool {
        guard let (queue, socket) = queue(for: destination) else { return false }
        if queue.enqueue(bytes, to: destination) { return true }
        queue.flush(on: socket)
        return queue.enqueue(bytes, to: destination)
    }

    @inline(__always)
    private func queue(for destination: SocketAddress) -> (SendQueue, UDPSocket)? {
        switch destination.ip {
        case .v4:
            if let s = socketV4 { return (queueV4, s) }
        case .v6:
            if let s = socketV6 { return (queueV6, s) }
        }
        counters.droppedNoSocket &+= 1
        return nil
    }

    func flush() {
        if queueV4.pending > 0, let s = socketV4 { queueV4.flush(on: s) }
        if queueV6.pending > 0, let s = socketV6 { queueV6.flush(on: s) }
    }
}
