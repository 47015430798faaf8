import FZCore
import FZDaemon
import FZLinux
import Logging
import WireGuard

/// The static-peer WireGuard data plane: one TUN interface, one UDP socket per address family, one
/// `Device`, all driven by one `EventLoop` on its own thread.
///
/// TUN → destination → AllowedIPs (longest prefix) → `Peer.encapsulate` → UDP, and
/// UDP → `Device.decapsulate` → inner source checked against that peer's AllowedIPs → TUN.
/// The peer's endpoint follows the source of its authenticated packets (roaming, §2.1); the core
/// updates it, and every send reads it afresh.
///
/// Buffers: TUN packets are read into a preallocated slab with 16 bytes of headroom, encrypted in
/// place and handed to `SendQueue` as gather entries (no copy), flushed before the slab is reused.
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
/// and leaving that state is logged, and everything is counted (`GatewayCounters`, `Device`).
///
/// Loop-confined: every method runs on the loop thread (or before the loop starts).
public final class DataPlane {
    public private(set) var device: Device
    public private(set) var counters = GatewayCounters()
    public private(set) var load: HandshakeLoadMonitor
    public let tun: TunDevice
    public let socketV4: UDPSocket?
    public let socketV6: UDPSocket?

    private var allowedIPs: AllowedIPs<PeerID>
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
    /// Where housekeeping publishes the counters for `/metrics` (`--metrics-listen`), set before `attach`.
    public var metrics: GatewayMetrics?
    private var nextHousekeeping: Timestamp = .distantFuture
    /// Device counters when the current under-load episode began, for its log line.
    private var episodeStart: (at: Timestamp, cookies: UInt64, limited: UInt64, handshakes: UInt64)?

    /// - Parameters:
    ///   - mtu: the TUN MTU; buffers are sized from it.
    ///   - load: when the gateway counts as under load (handshake flood protection).
    public init(device: Device, allowedIPs: AllowedIPs<PeerID>, tun: TunDevice, socketV4: UDPSocket?,
                socketV6: UDPSocket?, mtu: Int, load: HandshakeLoadMonitor = HandshakeLoadMonitor(), logger: Logger) {
        precondition(socketV4 != nil || socketV6 != nil, "the data plane needs a UDP socket")
        self.load = load
        self.device = device
        self.allowedIPs = allowedIPs
        self.tun = tun
        self.socketV4 = socketV4
        self.socketV6 = socketV6
        self.logger = logger
        // 16-byte header + packet padded to 16 + 16-byte tag, rounded to cache lines.
        slotStride = (mtu + 16 + 16 + 16 + 63) & ~63
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
            min(self.device.nextDeadline, self.device.underLoad ? self.load.until : .distantFuture, self.nextHousekeeping)
        }
        loop.timeoutHandler = { [unowned self] now in self.handleTimers(now: now) }
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
            let packetArea = UnsafeMutableRawBufferPointer(start: slot + 16, count: slotStride - 32)
            let n: Int
            do {
                guard case .processed(let count) = try tun.read(into: packetArea) else { break }
                n = count
            } catch {
                logger.error("reading the TUN interface failed", metadata: ["error": "\(error)"])
                break
            }
            counters.tunPacketsRead &+= 1
            guard let peer = route(UnsafeRawBufferPointer(start: slot + 16, count: n)) else { continue }
            let out = UnsafeMutableRawBufferPointer(start: slot, count: slotStride)
            let plaintext = UnsafeRawBufferPointer(start: slot + 16, count: n)
            switch device[peer].encapsulate(plaintext, into: out, now: now) {
            case .datagram(let length), .handshakeInitiation(let length):
                if send(UnsafeRawBufferPointer(start: slot, count: length), peer: peer, copy: false) { used += 1 }
            case .queued, .drop:
                break
            }
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
        let plaintextCapacity = slotStride - 32
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
            guard let peer = route(UnsafeRawBufferPointer(packet)) else { continue }
            if header.gsoType == VirtioNetHeader.gsoNone {
                if header.flags & VirtioNetHeader.needsChecksum != 0,
                   !InternetChecksum.completePartialChecksum(packet, start: Int(header.checksumStart), offset: Int(header.checksumOffset))
                {
                    counters.droppedMalformedOutgoing &+= 1
                    continue
                }
                guard packet.count <= plaintextCapacity else {
                    counters.droppedMalformedOutgoing &+= 1
                    continue
                }
                if used == batch { flush(); used = 0 }
                let slot = tunSlab + used * slotStride
                (slot + 16).copyMemory(from: packet.baseAddress!, byteCount: packet.count)
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
                let length = segmenter.writeSegment(index, into: UnsafeMutableRawBufferPointer(start: slot + 16, count: plaintextCapacity))
                if encapsulateSlot(slot, length: length, peer: peer, now: now) { used += 1 }
            }
        }
        flush()
    }

    /// Encrypts the plaintext at `slot + 16` in place and queues it uncopied. True if the slot is
    /// now referenced by a send queue (it must not be reused before the next flush).
    @inline(__always)
    private func encapsulateSlot(_ slot: UnsafeMutableRawPointer, length: Int, peer: PeerID, now: Timestamp) -> Bool {
        let out = UnsafeMutableRawBufferPointer(start: slot, count: slotStride)
        let plaintext = UnsafeRawBufferPointer(start: slot + 16, count: length)
        switch device[peer].encapsulate(plaintext, into: out, now: now) {
        case .datagram(let n), .handshakeInitiation(let n):
            return send(UnsafeRawBufferPointer(start: slot, count: n), peer: peer, copy: false)
        case .queued, .drop:
            return false
        }
    }

    /// The peer for an outgoing packet's destination; counts the drop when there is none.
    @inline(__always)
    private func route(_ packet: UnsafeRawBufferPointer) -> PeerID? {
        guard packet.count >= 1 else {
            counters.droppedMalformedOutgoing &+= 1
            return nil
        }
        let peer: PeerID?
        switch packet[0] >> 4 {
        case 4 where packet.count >= 20:
            peer = allowedIPs.lookup(v4: UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        case 6 where packet.count >= 40:
            peer = allowedIPs.lookup(
                v6High: UInt64(bigEndian: packet.loadUnaligned(fromByteOffset: 24, as: UInt64.self)),
                low: UInt64(bigEndian: packet.loadUnaligned(fromByteOffset: 32, as: UInt64.self)))
        default:
            counters.droppedMalformedOutgoing &+= 1
            return nil
        }
        if peer == nil { counters.droppedNoRoute &+= 1 }
        return peer
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

    @inline(__always)
    private func receiveDatagram(_ datagram: UnsafeRawBufferPointer, from source: SocketAddress, now: Timestamp) {
        let handshake = Self.isHandshakeMessage(datagram)
        if handshake { updateLoadState(now: now) }
        let (peer, result) = device.decapsulate(datagram, from: source, into: scratch, now: now)
        if handshake, result != .drop(.invalidMAC1), result != .drop(.malformed) {
            // A valid MAC1: without the cookie mechanism this would cost a Curve25519 computation.
            counters.handshakeMessagesReceived &+= 1
            load.record(now: now)
        }
        switch result {
        case .packet(let range):
            deliver(UnsafeRawBufferPointer(rebasing: scratch[range]), from: peer!)
        case .handshakeResponse(let n), .cookieReply(let n):
            enqueue(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), to: source)
        case .handshakeCompleted(let n):
            logger.info("handshake completed", metadata: ["peer": "\(device[peer!].publicKey)", "endpoint": "\(source)"])
            send(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), peer: peer!, copy: true)
        case .keepalive, .cookieAccepted, .drop:
            break
        }
        if let peer, device[peer].queuedPacketCount > 0 { drainQueue(of: peer, now: now) }
    }

    /// Checks the inner source against the sending peer's AllowedIPs and writes the packet to TUN.
    @inline(__always)
    private func deliver(_ packet: UnsafeRawBufferPointer, from peer: PeerID) {
        let owner: PeerID?
        switch packet.count >= 1 ? packet[0] >> 4 : 0 {
        case 4 where packet.count >= 20:
            owner = allowedIPs.lookup(v4: UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        case 6 where packet.count >= 40:
            owner = allowedIPs.lookup(
                v6High: UInt64(bigEndian: packet.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                low: UInt64(bigEndian: packet.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
        default:
            counters.droppedMalformedIncoming &+= 1
            return
        }
        guard owner == peer else {
            counters.droppedSourceNotAllowed &+= 1
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
        while let n = device[peer].nextQueuedDatagram(into: scratch, now: now) {
            send(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), peer: peer, copy: true)
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
        guard underLoad != device.underLoad else { return }
        device.underLoad = underLoad
        let cookies = device.cookieRepliesSent, limited = device.dropped[.rateLimited]
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
        if device.underLoad { updateLoadState(now: now) }
        for (peer, action) in device.handleTimeout(now: now) {
            switch action {
            case .sendHandshakeInitiation(let bytes), .sendKeepalive(let bytes):
                bytes.withUnsafeBytes { _ = send($0, peer: peer, copy: true) }
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
        if let metrics { metrics.publish(snapshot(now: now)) }
    }

    /// The counters as `/metrics` shows them (allocates: once a second, never per packet).
    func snapshot(now: Timestamp) -> GatewaySnapshot {
        var s = GatewaySnapshot()
        s.counters = counters
        s.udpSendDropped = UInt64(udpSendDropped)
        s.deviceDropped = device.dropped
        s.cookieRepliesSent = device.cookieRepliesSent
        s.underLoad = device.underLoad
        let wall = RealtimeClock.now()
        let unixNow = Double(wall.seconds) + Double(wall.nanoseconds) / 1e9
        for id in device.peerIDs {
            let peer = device[id]
            let last = peer.lastHandshake.map { unixNow - Double((now - $0).nanosecondsClamped) / 1e9 }
            s.peers.append(.init(publicKey: peer.publicKey.base64, stats: peer.stats, lastHandshakeUnixSeconds: last))
        }
        return s
    }

    // MARK: sending

    /// Queues a datagram to the peer's current endpoint: copied into the queue, or (`copy: false`)
    /// referenced in place, which requires a flush before the bytes are reused. False if dropped.
    @discardableResult
    private func send(_ bytes: UnsafeRawBufferPointer, peer: PeerID, copy: Bool) -> Bool {
        guard let endpoint = device.endpoint(of: peer) else {
            counters.droppedNoEndpoint &+= 1
            return false
        }
        if copy { return enqueue(bytes, to: endpoint) }
        guard let (queue, socket) = queue(for: endpoint) else { return false }
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        if queue.enqueue(header: empty, payload: bytes, to: endpoint) { return true }
        queue.flush(on: socket)
        return queue.enqueue(header: empty, payload: bytes, to: endpoint)
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
