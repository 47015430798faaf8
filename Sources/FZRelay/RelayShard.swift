import FZCore
import FZLinux
import Logging
import STUN
import TURN
import FZDaemon

/// One event-loop thread of the relay (a shard): owns its sockets, feeds datagrams to its own
/// TURN state machine and carries out what it answers. Everything here runs on the shard's loop
/// thread, except `init` (before the loop starts) and what is handed over with `loop.execute`.
///
/// Several shards share the listening address through SO_REUSEPORT; the kernel hashes each
/// client 5-tuple to one of them, so an allocation's datagrams normally reach the shard that
/// created it (and owns its relayed socket). When one arrives elsewhere (the reuseport group
/// changed, or a test sends from another socket), the `ShardDirectory` names the owner and the
/// datagram is handed to it: only local misses look there, so the hot path takes no lock.
///
/// Datagram paths: a batch is read with recvmmsg into the shared `ReceivePool`; replies and
/// relayed datagrams are queued in preallocated `SendQueue`s and flushed with sendmmsg before the
/// pool is reused. ChannelData payloads and Send indications' DATA go out without a copy (the
/// queue's iovec points into the pool), and the 4-byte ChannelData header for the client
/// direction is written into the pool slot's headroom in front of the payload. A Data indication
/// is written whole into a listener queue's slot (one copy of the payload), with a transaction ID
/// from the shard's `TransactionIDPool`. None of these paths allocates or takes a lock.
final class RelayShard {
    final class Listener {
        let socket: UDPSocket
        let queue: SendQueue
        init(socket: UDPSocket, queue: SendQueue) {
            self.socket = socket
            self.queue = queue
        }
    }

    let index: Int
    let loop: EventLoop
    let directory: ShardDirectory
    /// All shards, this one included, for handing over datagrams (set once before the loops run).
    var shards: [LoopConfined<RelayShard>] = []
    let table: RelaySocketTable
    // Loop-confined state on the per-datagram path: only the loop thread touches it (the type's
    // contract), so the runtime's dynamic exclusivity checks (a thread-local access set per
    // access) are turned off for these properties; the static checks stay.
    @exclusivity(unchecked) var server: TURNServer<RelaySockets>
    @exclusivity(unchecked) var listeners: [SocketAddress: Listener] = [:]
    /// The listener when there is exactly one (the usual case): found by one comparison.
    @exclusivity(unchecked) var soleListener: (address: SocketAddress, listener: Listener)?
    /// 64 KiB slots: with UDP GRO one read may hold a run of datagrams from one sender.
    let pool = ReceivePool(count: 64, capacity: 65_535, headroom: 64, coalescing: SocketOptions.supportsUDPGRO)
    /// Datagrams to peers, all from `peerQueueSocket` (flushed when the next one is from another).
    let peerQueue = SendQueue(count: 64, capacity: 2048, segmentation: true)
    @exclusivity(unchecked) var peerQueueSocket: UDPSocket?
    /// Where a ChannelData header is built before `SendQueue` copies it into its slot.
    let headerScratch = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
    /// Bytes per listener send slot: the largest reply or Data indication (the TURN server drops
    /// peer datagrams whose Data indication would not fit, counted as oversize).
    static let listenerSlotCapacity = 2048
    /// Random transaction IDs for Data indications (RFC 8489 §5), without a syscall per packet.
    let transactionIDs = TransactionIDPool()
    var logger: Logger
    let metrics: RelayMetrics
    var nextHousekeeping: Timestamp = .zero
    /// Fed by every shard's housekeeping; shard 0 sends the pings (FZDaemon.Watchdog).
    var watchdog: Watchdog?
    var lastStatus: Timestamp = .zero
    @exclusivity(unchecked) var sendDropped: UInt64 = 0
    @exclusivity(unchecked) var truncatedDropped: UInt64 = 0
    @exclusivity(unchecked) var handedOver: UInt64 = 0
    @exclusivity(unchecked) var handedIn: UInt64 = 0
    /// Reads that held more than one datagram (UDP GRO), and the datagrams they held.
    @exclusivity(unchecked) var coalescedReads: UInt64 = 0
    @exclusivity(unchecked) var coalescedDatagrams: UInt64 = 0

    // TCP clients (StreamClients.swift): off the UDP data path entirely, except one emptiness
    // check per flush and one transport check per peer datagram in the TURN server.
    var streamListeners: [SocketAddress: TCPListener] = [:]
    var connections: [FiveTuple: StreamConnection] = [:]
    var streamsToFlush: [StreamConnection] = []
    var streamCounters = StreamCounters()
    let streamLimits: StreamLimits

    init(index: Int, settings: RelaySettings, directory: ShardDirectory, nonceSecret: [UInt8], loop: EventLoop,
         logger: Logger, metrics: RelayMetrics) throws(SystemError) {
        self.index = index
        self.loop = loop
        self.directory = directory
        self.logger = logger
        self.metrics = metrics
        streamLimits = settings.streamLimits
        table = RelaySocketTable(loop: loop)
        var config = settings.serverConfig
        config.portRange = settings.portSlice(index)
        config.maxDataIndicationSize = Self.listenerSlotCapacity
        server = TURNServer(
            config: config, credentials: settings.credentials(settings.reloadable),
            peerPolicy: settings.peerPolicy(settings.reloadable),
            sockets: RelaySockets(table: table, directory: directory, shard: index), nonceSecret: nonceSecret)
        server.unixSecondsAtZero = Int64(RealtimeClock.unixSeconds()) - Int64(MonotonicClock.now().seconds)
        for address in settings.listeners {
            let socket: UDPSocket
            do {
                socket = try UDPSocket(
                    bindingTo: address, reusePort: settings.threads > 1, receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20)
            } catch {
                throw SystemError(errno: error.errno, call: "\(error.call) \(address)")  // name the address
            }

            if SocketOptions.supportsUDPGRO { try SocketOptions.setUDPGRO(socket, enabled: true) }
            let listener = Listener(
                socket: socket, queue: SendQueue(count: 64, capacity: Self.listenerSlotCapacity, segmentation: true))
            listeners[address] = listener
        }
        if listeners.count == 1, let (address, listener) = listeners.first { soleListener = (address, listener) }
        if settings.tcp {
            for address in settings.listeners {
                do {
                    streamListeners[address] = try TCPListener(bindingTo: address, reusePort: settings.threads > 1)
                } catch {
                    throw SystemError(errno: error.errno, call: "\(error.call) \(address) (TCP)")
                }
            }
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
        for (address, listener) in streamListeners {
            try loop.register(fd: listener.fd) { [unowned self] _ in self.streamListenerReadable(listener, address: address) }
        }
        // The first housekeeping (and with it STATUS= and WATCHDOG=) comes after READY=1,
        // which is queued with `execute` before the loop starts.
        let now = MonotonicClock.now()
        nextHousekeeping = now + .milliseconds(100)
        lastStatus = now
        loop.deadlineProvider = { [unowned self] in min(self.server.nextDeadline, self.nextHousekeeping) }
        loop.timeoutHandler = { [unowned self] now in self.timeout(now) }
    }

    @inline(__always)
    func listener(at address: SocketAddress) -> Listener? {
        if let sole = soleListener { return sole.address == address ? sole.listener : nil }
        return listeners[address]
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
            let source = pool.source(i)
            countCoalesced(i)
            // A GRO read holds several datagrams from one client; each is a message of its own.
            pool.forEachSegment(i) { datagram in
                dispatch(UnsafeRawBufferPointer(datagram), from: source, listener: listener, address: address, now: now)
            }
        }
        flushAll()
        drainEvents()
    }

    /// Routes one client datagram: to this shard's state machine, or to the shard that owns
    /// its allocation.
    func dispatch(_ payload: UnsafeRawBufferPointer, from source: SocketAddress, listener: Listener,
                  address: SocketAddress, now: Timestamp) {
        if shards.count > 1 {
            // The hot path: ChannelData for an allocation held here, one lookup.
            if let action = server.handleChannelDataIfHeld(payload, from: source, listener: address, now: now) {
                carryOut(action, payload: payload, from: source, listener: listener)
                return
            }
            let tuple = FiveTuple(client: source, listener: address)
            if !server.hasAllocation(tuple), let owner = directory.owner(of: tuple), owner != index {
                handOver(payload, from: source, listener: address, to: owner)
                return
            }
        }
        process(payload, from: source, listener: listener, address: address, now: now)
    }

    /// Feeds a datagram as if this shard's listening socket for `address` had received it
    /// (tests: the kernel's SO_REUSEPORT choice cannot be steered from outside).
    func inject(_ bytes: [UInt8], from source: SocketAddress, listener address: SocketAddress) {
        guard let listener = listeners[address] else { return }
        // Flushed inside: payloads forwarded in place point into `bytes`.
        bytes.withUnsafeBytes {
            dispatch($0, from: source, listener: listener, address: address, now: MonotonicClock.now())
            flushAll()
        }
        drainEvents()
    }

    /// Runs one client datagram through the state machine and queues what it answers. Payloads
    /// forwarded in place must stay valid until `flushAll`.
    func process(_ payload: UnsafeRawBufferPointer, from source: SocketAddress, listener: Listener,
                 address: SocketAddress, now: Timestamp) {
        carryOut(server.handleClient(payload, from: source, listener: address, now: now), payload: payload, from: source,
                 listener: listener)
    }

    @inline(__always)
    func carryOut(_ action: ClientAction, payload: UnsafeRawBufferPointer, from source: SocketAddress, listener: Listener) {
        switch action {
        case .none:
            break
        case .reply(let bytes):
            bytes.withUnsafeBytes { enqueue(listener, $0, to: source) }
        case .forward(let from, let to, let offset, let length, _):
            guard let socket = table.socket(at: from) else { return }
            enqueuePeer(socket, payload: UnsafeRawBufferPointer(rebasing: payload[offset..<offset + length]), to: to)
        }
    }

    /// Gives a datagram whose allocation lives on another shard to that shard's loop.
    func handOver(_ payload: UnsafeRawBufferPointer, from source: SocketAddress, listener address: SocketAddress,
                  to owner: Int) {
        handedOver += 1
        let bytes = Array(payload)
        let target = shards[owner]
        target.value.loop.execute {
            target.value.receiveHandedOver(bytes, from: source, listener: address)
        }
    }

    func receiveHandedOver(_ bytes: [UInt8], from source: SocketAddress, listener address: SocketAddress) {
        guard let listener = listeners[address] else { return }
        handedIn += 1
        bytes.withUnsafeBytes {
            process($0, from: source, listener: listener, address: address, now: MonotonicClock.now())
            flushAll()
        }
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
            let source = pool.source(i)
            let first = pool.payload(i).baseAddress
            countCoalesced(i)
            // A GRO read holds several datagrams from one peer; only the first has headroom.
            pool.forEachSegment(i) { payload in
                relayFromPeer(payload, from: source, relayed: relayed, hasHeadroom: payload.baseAddress == first, now: now)
            }
        }
        flushAll()
    }

    /// Datagrams that left inside UDP GSO messages, over all of this shard's queues.
    var segmentedSent: Int { peerQueue.totalSegmented + listeners.values.reduce(0) { $0 + $1.queue.totalSegmented } }

    @inline(__always)
    func countCoalesced(_ i: Int) {
        let length = pool.payload(i).count
        let size = pool.segmentSize(i)
        guard size > 0, size < length else { return }
        coalescedReads &+= 1
        coalescedDatagrams &+= UInt64((length + size - 1) / size)
    }

    @inline(__always)
    func relayFromPeer(_ payload: UnsafeMutableRawBufferPointer, from source: SocketAddress, relayed: SocketAddress,
                       hasHeadroom: Bool, now: Timestamp) {
        switch server.handlePeer(UnsafeRawBufferPointer(payload), from: source, relayed: relayed, now: now) {
        case .none:
            break
        case .channelData(let client, let listenerAddress, let channel):
            guard let listener = listener(at: listenerAddress) else { return }
            let header: UnsafeRawBufferPointer
            let datagram: UnsafeRawBufferPointer
            if hasHeadroom {
                // Header in the headroom right before the payload: one contiguous datagram, no copy.
                let start = payload.baseAddress! - ChannelData.headerSize
                ChannelData.writeHeader(channel: channel, length: payload.count, to: start)
                header = UnsafeRawBufferPointer(start: nil, count: 0)
                datagram = UnsafeRawBufferPointer(start: start, count: payload.count + ChannelData.headerSize)
            } else {
                // Inside a GRO read the bytes before the payload are the previous datagram's: the
                // header is copied into the queue's slot and the payload gathered after it.
                ChannelData.writeHeader(channel: channel, length: payload.count, to: headerScratch)
                header = UnsafeRawBufferPointer(start: headerScratch, count: ChannelData.headerSize)
                datagram = UnsafeRawBufferPointer(payload)
            }
            if !listener.queue.enqueue(header: header, payload: datagram, to: client) {
                listener.queue.flush(on: listener.socket)
                _ = listener.queue.enqueue(header: header, payload: datagram, to: client)
            }
        case .dataIndication(let client, let listenerAddress, let peer):
            guard let listener = listener(at: listenerAddress) else { return }
            enqueueDataIndication(listener, payload: UnsafeRawBufferPointer(payload), from: peer, to: client)
        case .streamChannelData(let tuple, let channel):
            relayStreamChannelData(UnsafeRawBufferPointer(payload), tuple: tuple, channel: channel, now: now)
        case .streamDataIndication(let tuple, let peer):
            relayStreamDataIndication(UnsafeRawBufferPointer(payload), tuple: tuple, peer: peer, now: now)
        }
    }

    /// Writes a Data indication (RFC 8656 §11.3) straight into the listener queue's next slot:
    /// header and XOR-PEER-ADDRESS, one copy of the payload, padding. The TURN server only asks
    /// for indications that fit a slot (`ServerConfig.maxDataIndicationSize`); should one not,
    /// it is dropped and counted in `sendDropped`, never built on the heap.
    func enqueueDataIndication(_ listener: Listener, payload: UnsafeRawBufferPointer, from peer: SocketAddress,
                               to client: SocketAddress) {
        guard let size = DataIndication.size(peer: peer, payloadLength: payload.count), size <= listener.queue.capacity
        else {
            sendDropped += 1
            return
        }
        let transactionID = transactionIDs.take()
        // A local function, not a closure value: passed as a non-escaping argument, its context
        // stays on the stack.
        func fill(_ slot: UnsafeMutableRawBufferPointer) {
            _ = DataIndication.write(peer: peer, transactionID: transactionID, payload: payload, into: slot)
        }
        if !listener.queue.enqueue(to: client, length: size, fill) {
            listener.queue.flush(on: listener.socket)
            _ = listener.queue.enqueue(to: client, length: size, fill)
        }
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
        if !streamsToFlush.isEmpty { flushStreams() }
    }

    func drainEvents() {
        for e in server.drainEvents() {
            if !connections.isEmpty { streamAllocationEvent(e) }
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

    /// Once a second: wall-clock offset for REST expiries, metrics, heartbeat; shard 0 also
    /// pings the watchdog (only while every shard's heartbeat is fresh) and updates STATUS=.
    func housekeeping(_ now: Timestamp) {
        // Once a second, or more often when the watchdog's interval asks for it.
        nextHousekeeping = now + (watchdog?.beatPeriod ?? .seconds(1))
        server.unixSecondsAtZero = Int64(RealtimeClock.unixSeconds()) - Int64(now.seconds)
        metrics.publish(shard: index, server.stats, allocations: server.allocationCount, relaySockets: table.sockets.count,
                        sendDropped: sendDropped, truncated: truncatedDropped, handedOver: handedOver,
                        groDatagrams: coalescedDatagrams, gsoDatagrams: segmentedSent)
        streamHousekeeping(now)
        metrics.publishStreams(shard: index, streamCounters, open: connections.count)
        watchdog?.beat(loop: index, now: now)
        guard index == 0 else { return }
        watchdog?.pingIfDue(now: now)
        if now - lastStatus >= .seconds(10) {
            SystemdNotifier.notify("STATUS=relaying: \(directory.totalAllocations) allocations on \(directory.shardCount) threads")
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
        for c in Array(connections.values) { closeStream(c, .shutdown) }
        for l in streamListeners.values {
            loop.unregister(fd: l.fd)
            l.close()
        }
        for socket in table.sockets.values {
            loop.unregister(fd: socket.fd)
            socket.close()
        }
        table.forgetAll()
        for l in listeners.values {
            loop.unregister(fd: l.socket.fd)
            l.socket.close()
        }
    }

    deinit {
        headerScratch.deallocate()
        pool.deallocate()
        peerQueue.deallocate()
        for l in listeners.values { l.queue.deallocate() }
    }
}

/// Relayed sockets by their bound address; opened and closed at the TURN server's request.
final class RelaySocketTable {
    let loop: EventLoop
    @exclusivity(unchecked) var sockets: [SocketAddress: UDPSocket] = [:]
    @exclusivity(unchecked) private var last: UDPSocket?
    var onPeerReadable: ((UDPSocket) -> Void)?
    var onWillClose: ((UDPSocket) -> Void)?
    var bindFailures: UInt64 = 0

    init(loop: EventLoop) { self.loop = loop }

    func open(_ address: SocketAddress, dontFragment: Bool) -> Bool {
        let socket: UDPSocket
        do {
            socket = try UDPSocket(bindingTo: address)
            if dontFragment { try SocketOptions.setDontFragment(socket) }
            if SocketOptions.supportsUDPGRO { try SocketOptions.setUDPGRO(socket, enabled: true) }
            try loop.register(fd: socket.fd) { [unowned self, unowned socket] _ in self.onPeerReadable?(socket) }
        } catch {
            bindFailures += 1
            return false
        }
        sockets[address] = socket
        return true
    }

    /// The relayed socket bound to `address`. The last one found is remembered: datagrams come
    /// in trains (a client's burst, a video frame), and a comparison is cheaper than a hash.
    @inline(__always)
    func socket(at address: SocketAddress) -> UDPSocket? {
        if let last, last.localAddress == address { return last }
        guard let socket = sockets[address] else { return nil }
        last = socket
        return socket
    }

    /// Drops every socket from the table (the caller closed them).
    func forgetAll() {
        sockets.removeAll()
        last = nil
    }

    func close(_ address: SocketAddress) {
        guard let socket = sockets.removeValue(forKey: address) else { return }
        if last === socket { last = nil }
        onWillClose?(socket)
        loop.unregister(fd: socket.fd)
        socket.close()
    }
}

/// The TURN server's handle on its shard: the socket table and the shared directory.
struct RelaySockets: RelaySocketProvider {
    let table: RelaySocketTable
    let directory: ShardDirectory
    let shard: Int

    mutating func openRelay(at address: SocketAddress, dontFragment: Bool) -> Bool {
        table.open(address, dontFragment: dontFragment)
    }

    mutating func closeRelay(at address: SocketAddress) { table.close(address) }

    mutating func admitAllocation(_ tuple: FiveTuple, user: String, userQuota: Int, totalQuota: Int) -> Bool {
        directory.admit(tuple, user: user, shard: shard, userQuota: userQuota, totalQuota: totalQuota)
    }

    mutating func allocationEnded(_ tuple: FiveTuple, user: String) { directory.release(tuple, user: user) }
}
