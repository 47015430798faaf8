import FZCore
import FZLinux
import Logging
import STUN
import TURN

/// The relay's event-loop side: owns the sockets, feeds datagrams to the TURN state machine and
/// carries out what it answers. Everything here runs on the loop thread, except `init` (before
/// the loop starts) and what is handed over with `loop.execute`.
///
/// Datagram paths: a batch is read with recvmmsg into the shared `ReceivePool`; replies and
/// relayed datagrams are queued in preallocated `SendQueue`s and flushed with sendmmsg before the
/// pool is reused. ChannelData payloads go out without a copy (the queue's iovec points into the
/// pool), and the 4-byte ChannelData header for the client direction is written into the pool
/// slot's headroom in front of the payload.
final class RelayRuntime {
    final class Listener {
        let socket: UDPSocket
        let queue: SendQueue
        init(socket: UDPSocket, queue: SendQueue) {
            self.socket = socket
            self.queue = queue
        }
    }

    let loop: EventLoop
    let table: RelaySocketTable
    var server: TURNServer<RelaySockets>
    var listeners: [SocketAddress: Listener] = [:]
    let pool = ReceivePool(count: 64, capacity: 2048, headroom: 64)
    /// Datagrams to peers, all from `peerQueueSocket` (flushed when the next one is from another).
    let peerQueue = SendQueue(count: 64, capacity: 2048)
    var peerQueueSocket: UDPSocket?
    var logger: Logger
    let metrics: RelayMetrics
    var nextHousekeeping: Timestamp = .zero
    var watchdogInterval: Duration?
    var lastWatchdog: Timestamp = .zero
    var lastStatus: Timestamp = .zero
    var sendDropped: UInt64 = 0
    var truncatedDropped: UInt64 = 0

    init(settings: RelaySettings, loop: EventLoop, logger: Logger, metrics: RelayMetrics) throws(SystemError) {
        self.loop = loop
        self.logger = logger
        self.metrics = metrics
        table = RelaySocketTable(loop: loop)
        server = TURNServer(
            config: settings.serverConfig, credentials: settings.credentials(settings.reloadable),
            peerPolicy: settings.peerPolicy(settings.reloadable), sockets: RelaySockets(table: table))
        server.unixSecondsAtZero = Int64(WallClock.unixSeconds()) - Int64(MonotonicClock.now().seconds)
        for address in settings.listeners {
            let socket = try UDPSocket(bindingTo: address, receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20)
            let listener = Listener(socket: socket, queue: SendQueue(count: 64, capacity: 2048))
            listeners[address] = listener
        }
        table.onPeerReadable = { [unowned self] socket in self.peerReadable(socket) }
        table.onWillClose = { [unowned self] socket in
            // Queued datagrams may still point at this socket: send them while it is open.
            if self.peerQueueSocket === socket {
                if self.peerQueue.pending > 0 { self.peerQueue.flush(on: socket) }
                self.peerQueueSocket = nil
            }
        }
    }

    /// Registers the listening sockets with the loop; call before the loop runs.
    func register() throws(SystemError) {
        for (address, listener) in listeners {
            try loop.register(fd: listener.socket.fd) { [unowned self] _ in self.clientReadable(listener, address: address) }
        }
        loop.deadlineProvider = { [unowned self] in min(self.server.nextDeadline, self.nextHousekeeping) }
        loop.timeoutHandler = { [unowned self] now in self.timeout(now) }
    }

    var listeningAddresses: [SocketAddress] { listeners.values.map(\.socket.localAddress) }

    // MARK: Datagrams

    func clientReadable(_ listener: Listener, address: SocketAddress) {
        let n: Int
        do {
            n = try pool.receive(from: listener.socket)
        } catch {
            logger.warning("receive failed", metadata: ["error": "\(error)"])
            return
        }
        guard n > 0 else { return }
        let now = MonotonicClock.now()
        for i in 0..<n {
            if pool.truncated(i) {
                truncatedDropped += 1
                continue
            }
            let payload = pool.payload(i)
            let source = pool.source(i)
            switch server.handleClient(UnsafeRawBufferPointer(payload), from: source, listener: address, now: now) {
            case .none:
                break
            case .reply(let bytes):
                bytes.withUnsafeBytes { enqueue(listener, $0, to: source) }
            case .forward(let from, let to, let offset, let length, _):
                guard let socket = table.sockets[from] else { continue }
                let slice = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(payload)[offset..<offset + length])
                enqueuePeer(socket, payload: slice, to: to)
            case .forwardBytes(let from, let to, let bytes, _):
                guard let socket = table.sockets[from] else { continue }
                bytes.withUnsafeBytes { enqueuePeerCopy(socket, $0, to: to) }
            }
        }
        flushAll()
        drainEvents()
    }

    func peerReadable(_ socket: UDPSocket) {
        let n: Int
        do {
            n = try pool.receive(from: socket)
        } catch {
            logger.debug("relayed receive failed", metadata: ["error": "\(error)"])
            return
        }
        guard n > 0 else { return }
        let now = MonotonicClock.now()
        let relayed = socket.localAddress
        for i in 0..<n {
            if pool.truncated(i) {
                truncatedDropped += 1
                continue
            }
            let payload = pool.payload(i)
            let source = pool.source(i)
            switch server.handlePeer(UnsafeRawBufferPointer(payload), from: source, relayed: relayed, now: now) {
            case .none:
                break
            case .channelData(let client, let listenerAddress, let channel):
                guard let listener = listeners[listenerAddress] else { continue }
                // Header in the headroom right before the payload: one contiguous datagram, no copy.
                let start = payload.baseAddress! - ChannelData.headerSize
                ChannelData.writeHeader(channel: channel, length: payload.count, to: start)
                let datagram = UnsafeRawBufferPointer(start: start, count: payload.count + ChannelData.headerSize)
                if !listener.queue.enqueue(header: UnsafeRawBufferPointer(start: nil, count: 0), payload: datagram, to: client) {
                    listener.queue.flush(on: listener.socket)
                    _ = listener.queue.enqueue(header: UnsafeRawBufferPointer(start: nil, count: 0), payload: datagram, to: client)
                }
            case .dataIndication(let client, let listenerAddress, let bytes):
                guard let listener = listeners[listenerAddress] else { continue }
                bytes.withUnsafeBytes { enqueue(listener, $0, to: client) }
            }
        }
        flushAll()
    }

    func enqueue(_ listener: Listener, _ bytes: UnsafeRawBufferPointer, to: SocketAddress) {
        guard bytes.count <= listener.queue.capacity else {
            sendDropped += 1
            return
        }
        if !listener.queue.enqueue(bytes, to: to) {
            listener.queue.flush(on: listener.socket)
            _ = listener.queue.enqueue(bytes, to: to)
        }
    }

    func switchPeerQueue(to socket: UDPSocket) {
        if let current = peerQueueSocket, current !== socket {
            if current.isOpen { peerQueue.flush(on: current) }
        }
        peerQueueSocket = socket
    }

    func enqueuePeer(_ socket: UDPSocket, payload: UnsafeRawBufferPointer, to: SocketAddress) {
        switchPeerQueue(to: socket)
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        if !peerQueue.enqueue(header: empty, payload: payload, to: to) {
            peerQueue.flush(on: socket)
            _ = peerQueue.enqueue(header: empty, payload: payload, to: to)
        }
    }

    func enqueuePeerCopy(_ socket: UDPSocket, _ bytes: UnsafeRawBufferPointer, to: SocketAddress) {
        guard bytes.count <= peerQueue.capacity else {
            sendDropped += 1
            return
        }
        switchPeerQueue(to: socket)
        if !peerQueue.enqueue(bytes, to: to) {
            peerQueue.flush(on: socket)
            _ = peerQueue.enqueue(bytes, to: to)
        }
    }

    /// Sends everything queued; must run before the receive pool is reused (zero-copy payloads).
    func flushAll() {
        if let s = peerQueueSocket, peerQueue.pending > 0 {
            if s.isOpen {
                sendDropped += UInt64(peerQueue.flush(on: s).dropped)
            }
        }
        for l in listeners.values where l.queue.pending > 0 {
            sendDropped += UInt64(l.queue.flush(on: l.socket).dropped)
        }
    }

    func drainEvents() {
        for e in server.drainEvents() {
            switch e {
            case .allocationCreated(let t, let user, let relayed, let lifetime):
                logger.info("allocation created", metadata: [
                    "client": "\(t.client)", "user": "\(user)", "relayed": "\(relayed.map(\.description).joined(separator: ","))",
                    "lifetime": "\(lifetime.components.seconds)s",
                ])
            case .allocationRefreshed(let t, let lifetime):
                logger.debug("allocation refreshed", metadata: ["client": "\(t.client)", "lifetime": "\(lifetime.components.seconds)s"])
            case .requestRefused(let t, let user, let method, let code):
                logger.debug("request refused", metadata: [
                    "client": "\(t.client)", "user": "\(user)", "method": "\(STUN.Method(rawValue: method))", "code": "\(code)",
                ])
            case .allocationDeleted(let t, let reason):
                logger.info("allocation deleted", metadata: ["client": "\(t.client)", "reason": "\(reason.rawValue)"])
            }
        }
    }

    // MARK: Time

    func timeout(_ now: Timestamp) {
        if now >= server.nextDeadline {
            server.handleTimeout(now: now)
            drainEvents()
        }
        if now >= nextHousekeeping {
            housekeeping(now)
        }
    }

    /// Once a second: wall-clock offset for REST expiries, metrics, watchdog, status.
    func housekeeping(_ now: Timestamp) {
        nextHousekeeping = now + .seconds(1)
        server.unixSecondsAtZero = Int64(WallClock.unixSeconds()) - Int64(now.seconds)
        metrics.publish(server.stats, allocations: server.allocationCount, relaySockets: table.sockets.count,
                        sendDropped: sendDropped, truncated: truncatedDropped)
        if let interval = watchdogInterval, now - lastWatchdog >= interval / 2 {
            SystemdNotifier.notify("WATCHDOG=1")
            lastWatchdog = now
        }
        if now - lastStatus >= .seconds(10) {
            SystemdNotifier.notify("STATUS=relaying: \(server.allocationCount) allocations")
            lastStatus = now
        }
    }

    // MARK: Reload and shutdown

    func reload(_ settings: RelaySettings, _ r: RelaySettings.Reloadable) {
        server.updateCredentials(settings.credentials(r))
        server.updatePeerPolicy(settings.peerPolicy(r))
        server.updateLimits(userQuota: r.userQuota, totalQuota: r.totalQuota)
        logger.notice("configuration reloaded", metadata: [
            "users": "\(r.users.count)", "secrets": "\(r.secrets.count)", "allow-peer": "\(r.allowPeer.count)",
            "deny-peer": "\(r.denyPeer.count)",
        ])
    }

    func closeAll() {
        for socket in table.sockets.values {
            loop.unregister(fd: socket.fd)
            socket.close()
        }
        table.sockets.removeAll()
        for l in listeners.values {
            loop.unregister(fd: l.socket.fd)
            l.socket.close()
        }
    }

    deinit {
        pool.deallocate()
        peerQueue.deallocate()
        for l in listeners.values { l.queue.deallocate() }
    }
}

/// Relayed sockets by their bound address; opened and closed at the TURN server's request.
final class RelaySocketTable {
    let loop: EventLoop
    var sockets: [SocketAddress: UDPSocket] = [:]
    var onPeerReadable: ((UDPSocket) -> Void)?
    var onWillClose: ((UDPSocket) -> Void)?
    var bindFailures: UInt64 = 0

    init(loop: EventLoop) { self.loop = loop }

    func open(_ address: SocketAddress, dontFragment: Bool) -> Bool {
        let socket: UDPSocket
        do {
            socket = try UDPSocket(bindingTo: address)
            if dontFragment { try SocketOptions.setDontFragment(socket) }
            try loop.register(fd: socket.fd) { [unowned self, unowned socket] _ in self.onPeerReadable?(socket) }
        } catch {
            bindFailures += 1
            return false
        }
        sockets[address] = socket
        return true
    }

    func close(_ address: SocketAddress) {
        guard let socket = sockets.removeValue(forKey: address) else { return }
        onWillClose?(socket)
        loop.unregister(fd: socket.fd)
        socket.close()
    }
}

/// The TURN server's handle on the socket table.
struct RelaySockets: RelaySocketProvider {
    let table: RelaySocketTable

    mutating func openRelay(at address: SocketAddress, dontFragment: Bool) -> Bool {
        table.open(address, dontFragment: dontFragment)
    }

    mutating func closeRelay(at address: SocketAddress) { table.close(address) }
}
