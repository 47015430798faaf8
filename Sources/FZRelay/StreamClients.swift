import FZCore
import FZLinux
import Logging
import STUN
import TURN

#if canImport(Glibc)
import Glibc
#endif

/// Why a client's TCP connection was closed (metrics label).
enum StreamCloseReason: Int, CaseIterable, Sendable {
    case peerClosed, reset, malformed, oversize, noAllocation, stalled, limit, allocationEnded, shutdown

    var label: String {
        switch self {
        case .peerClosed: "peer_closed"
        case .reset: "reset"
        case .malformed: "malformed"
        case .oversize: "oversize"
        case .noAllocation: "no_allocation"
        case .stalled: "stalled"
        case .limit: "limit"
        case .allocationEnded: "allocation_ended"
        case .shutdown: "shutdown"
        }
    }
}

/// What a shard counts of its TCP clients; published once a second.
struct StreamCounters: Sendable {
    var accepted: UInt64 = 0
    var closed = [UInt64](repeating: 0, count: StreamCloseReason.allCases.count)
    /// Messages to clients dropped because their connection's output buffer was full.
    var droppedMessages: UInt64 = 0
    var droppedBytes: UInt64 = 0
    /// accept4 failures other than "nothing pending" (EMFILE, ENFILE, ENOMEM...).
    var acceptFailures: UInt64 = 0
}

/// Limits on TCP clients (RFC 8656 §3.1 over TCP costs a descriptor and buffers per client, so
/// unlike UDP a flood of connections must be bounded explicitly).
struct StreamLimits: Sendable {
    var maxConnections = 10_000
    var maxConnectionsPerIP = 64
    /// A connection without an allocation this long after it was accepted is closed: the window
    /// a client has for its authenticated Allocate (a slowloris holds nothing longer).
    var allocateTimeout: Duration = .seconds(10)
    /// The largest message a client may send (`StreamFraming.largestWire`: any STUN message or
    /// ChannelData fits; the bound is what one connection's input buffer may grow to).
    var maxMessage = StreamFraming.largestWire
    /// Bytes queued in user space per connection when the kernel's send buffer is full; beyond it
    /// messages to that client are dropped and counted (datagram semantics: late is lost anyway).
    var outputLimit = 64 << 10
    /// A connection with queued output that the client has not drained for this long is closed.
    var stallTimeout: Duration = .seconds(10)
}

/// One client's TCP connection on a shard: the socket, the 5-tuple naming it, and its two
/// buffers. The input buffer holds at most one partial message after each read (whole messages
/// are handled where they lie, then the rest moves to the front); it starts at 4 KiB and grows to
/// `StreamLimits.maxMessage` only for a client that sends a message that large. The output
/// buffer exists only while the kernel's send buffer is full or within one batch; it is bounded by
/// `StreamLimits.outputLimit`. Both are allocated on first use, so an idle connection costs its
/// descriptor and this object. Loop-confined.
final class StreamConnection {
    let socket: TCPConnection
    let tuple: FiveTuple
    let acceptedAt: Timestamp
    var authenticated = false
    var isOpen = true

    private(set) var input: UnsafeMutableRawPointer?
    private(set) var inputCapacity = 0
    var inputCount = 0

    private var output: UnsafeMutableRawPointer?
    private var outputCapacity = 0
    private var outStart = 0
    private var outEnd = 0
    /// When the client last took bytes while output was queued (for the stall timeout).
    var lastProgress: Timestamp
    var watchingWritable = false
    var queuedForFlush = false

    init(socket: TCPConnection, tuple: FiveTuple, now: Timestamp) {
        self.socket = socket
        self.tuple = tuple
        acceptedAt = now
        lastProgress = now
    }

    deinit {
        input?.deallocate()
        output?.deallocate()
    }

    var pendingOutput: Int { outEnd - outStart }

    /// Room for reading: grows the input buffer (up to `limit`) when it is full.
    func inputSpace(limit: Int) -> UnsafeMutableRawBufferPointer? {
        if input == nil {
            inputCapacity = min(4096, limit)
            input = .allocate(byteCount: inputCapacity, alignment: 8)
        } else if inputCount == inputCapacity {
            guard inputCapacity < limit else { return nil }
            let bigger = min(inputCapacity * 4, limit)
            let p = UnsafeMutableRawPointer.allocate(byteCount: bigger, alignment: 8)
            p.copyMemory(from: input!, byteCount: inputCount)
            input!.deallocate()
            input = p
            inputCapacity = bigger
        }
        return UnsafeMutableRawBufferPointer(start: input! + inputCount, count: inputCapacity - inputCount)
    }

    /// Drops the first `n` bytes of input (the whole messages handled), keeping the partial rest.
    func consumeInput(_ n: Int) {
        guard n > 0, let input else { return }
        if n < inputCount { input.copyMemory(from: input + n, byteCount: inputCount - n) }
        inputCount -= n
    }

    /// `n` bytes at the end of the output queue, or nil when they would exceed `limit` (the
    /// caller drops the message and counts it).
    func reserveOutput(_ n: Int, limit: Int, now: Timestamp) -> UnsafeMutableRawPointer? {
        let pending = pendingOutput
        guard pending + n <= limit else { return nil }
        if pending == 0 {
            outStart = 0
            outEnd = 0
            lastProgress = now
        }
        if outEnd + n > outputCapacity {
            let needed = pending + n
            if needed > outputCapacity {
                let size = min(max(needed, outputCapacity * 2, 4096), limit)
                let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
                if pending > 0 { p.copyMemory(from: output! + outStart, byteCount: pending) }
                output?.deallocate()
                output = p
                outputCapacity = size
            } else if pending > 0 {
                output!.copyMemory(from: output! + outStart, byteCount: pending)
            }
            outStart = 0
            outEnd = pending
        }
        defer { outEnd += n }
        return output! + outEnd
    }

    func appendOutput(_ bytes: UnsafeRawBufferPointer, limit: Int, now: Timestamp) -> Bool {
        guard let p = reserveOutput(bytes.count, limit: limit, now: now) else { return false }
        if let base = bytes.baseAddress, bytes.count > 0 { p.copyMemory(from: base, byteCount: bytes.count) }
        return true
    }

    enum FlushOutcome { case done, blocked, failed }

    /// Writes queued output until done or the kernel's buffer is full.
    func flush(now: Timestamp) -> FlushOutcome {
        while outEnd > outStart {
            let chunk = UnsafeRawBufferPointer(start: output! + outStart, count: outEnd - outStart)
            switch try? socket.write(chunk) {
            case .processed(let n)?:
                outStart += n
                lastProgress = now
            case .wouldBlock?:
                return .blocked
            case nil:
                return .failed
            }
        }
        outStart = 0
        outEnd = 0
        return .done
    }
}

extension RelayShard {
    // MARK: TCP listeners and connections (RFC 8656 §3.1: client↔relay over TCP, peers over UDP)

    func streamListenerReadable(_ listener: TCPListener, address: SocketAddress) {
        let now = MonotonicClock.now()
        // One batch per readiness report, like the UDP sockets: other descriptors get their turn.
        for _ in 0..<64 {
            let accepted: TCPConnection
            do {
                guard case .processed(let c) = try listener.accept() else { return }
                accepted = c
            } catch {
                streamCounters.acceptFailures += 1
                logger.warning("accept failed", metadata: ["error": "\(error)"])
                return
            }
            streamCounters.accepted += 1
            let ip = accepted.remoteAddress.ip
            guard directory.admitConnection(ip, maxTotal: streamLimits.maxConnections, maxPerIP: streamLimits.maxConnectionsPerIP)
            else {
                streamCounters.closed[StreamCloseReason.limit.rawValue] += 1
                accepted.close()
                continue
            }
            try? accepted.setNoDelay()
            let tuple = FiveTuple(client: accepted.remoteAddress, listener: address, transport: .tcp)
            let connection = StreamConnection(socket: accepted, tuple: tuple, now: now)
            do {
                try loop.register(fd: accepted.fd) { [unowned self, unowned connection] events in
                    self.streamConnectionEvent(connection, events)
                }
            } catch {
                directory.releaseConnection(ip)
                streamCounters.acceptFailures += 1
                accepted.close()
                continue
            }
            connections[tuple] = connection
        }
    }

    func streamConnectionEvent(_ c: StreamConnection, _ events: EpollEvents) {
        if events.contains(.writable) {
            flushStream(c, now: MonotonicClock.now())
            guard c.isOpen else { return }
        }
        if events.contains(.readable) || events.contains(.hangup) || events.contains(.error) {
            streamReadable(c)
        }
    }

    func streamReadable(_ c: StreamConnection) {
        guard let space = c.inputSpace(limit: streamLimits.maxMessage) else {
            // Cannot happen: a partial message is smaller than the bound, which the buffer reaches.
            closeStream(c, .oversize)
            return
        }
        switch try? c.socket.read(into: space) {
        case .wouldBlock?:
            return
        case .processed(0)?:
            closeStream(c, .peerClosed)
            return
        case .processed(let n)?:
            c.inputCount += n
        case nil:
            closeStream(c, .reset)
            return
        }
        let now = MonotonicClock.now()
        let input = c.input!
        var offset = 0
        var failure: StreamCloseReason?
        framing: while offset < c.inputCount {
            let rest = UnsafeRawBufferPointer(start: input + offset, count: c.inputCount - offset)
            switch StreamFraming.next(rest, maxWire: streamLimits.maxMessage) {
            case .message(let length, let wire):
                let message = UnsafeRawBufferPointer(start: input + offset, count: length)
                carryOutStream(server.handleStreamMessage(message, tuple: c.tuple, now: now), message: message, to: c, now: now)
                offset += wire
            case .needMore:
                break framing
            case .tooLarge:
                failure = .oversize
                break framing
            case .invalid:
                failure = .malformed
                break framing
            }
        }
        // Payloads forwarded to peers point into the input buffer: send them before it moves.
        flushAll()
        c.consumeInput(offset)
        if let failure { closeStream(c, failure) }
        drainEvents()
    }

    func carryOutStream(_ action: ClientAction, message: UnsafeRawBufferPointer, to c: StreamConnection, now: Timestamp) {
        switch action {
        case .none:
            break
        case .reply(let bytes):
            bytes.withUnsafeBytes { queueStream(c, $0, now: now) }
        case .forward(let from, let to, let offset, let length, _):
            guard let socket = table.socket(at: from) else { return }
            enqueuePeer(socket, payload: UnsafeRawBufferPointer(rebasing: message[offset..<offset + length]), to: to)
        }
    }

    func queueStream(_ c: StreamConnection, _ bytes: UnsafeRawBufferPointer, now: Timestamp) {
        guard c.appendOutput(bytes, limit: streamLimits.outputLimit, now: now) else {
            streamCounters.droppedMessages += 1
            streamCounters.droppedBytes += UInt64(bytes.count)
            return
        }
        markForFlush(c)
    }

    @inline(__always)
    func markForFlush(_ c: StreamConnection) {
        guard !c.queuedForFlush else { return }
        c.queuedForFlush = true
        streamsToFlush.append(c)
    }

    /// A peer datagram for a TCP client on a channel: header, payload, padding to four bytes
    /// (RFC 8656 §12.5), one copy into the connection's output.
    func relayStreamChannelData(_ payload: UnsafeRawBufferPointer, tuple: FiveTuple, channel: UInt16, now: Timestamp) {
        guard let c = connections[tuple] else { return }
        let wire = ChannelData.headerSize + ((payload.count + 3) & ~3)
        guard let p = c.reserveOutput(wire, limit: streamLimits.outputLimit, now: now) else {
            streamCounters.droppedMessages += 1
            streamCounters.droppedBytes += UInt64(wire)
            return
        }
        ChannelData.writeHeader(channel: channel, length: payload.count, to: p)
        if let base = payload.baseAddress, payload.count > 0 {
            (p + ChannelData.headerSize).copyMemory(from: base, byteCount: payload.count)
        }
        let pad = wire - ChannelData.headerSize - payload.count
        if pad > 0 { (p + ChannelData.headerSize + payload.count).initializeMemory(as: UInt8.self, repeating: 0, count: pad) }
        markForFlush(c)
    }

    /// A peer datagram for a TCP client without a channel: a Data indication written in place.
    func relayStreamDataIndication(_ payload: UnsafeRawBufferPointer, tuple: FiveTuple, peer: SocketAddress, now: Timestamp) {
        guard let c = connections[tuple] else { return }
        guard let size = DataIndication.size(peer: peer, payloadLength: payload.count),
              let p = c.reserveOutput(size, limit: streamLimits.outputLimit, now: now)
        else {
            streamCounters.droppedMessages += 1
            streamCounters.droppedBytes += UInt64(payload.count)
            return
        }
        _ = DataIndication.write(peer: peer, transactionID: transactionIDs.take(), payload: payload,
                                 into: UnsafeMutableRawBufferPointer(start: p, count: size))
        markForFlush(c)
    }

    /// Writes every connection's queued output (once per batch: one send per connection).
    func flushStreams() {
        let now = MonotonicClock.now()
        for c in streamsToFlush {
            c.queuedForFlush = false
            if c.isOpen { flushStream(c, now: now) }
        }
        streamsToFlush.removeAll(keepingCapacity: true)
    }

    func flushStream(_ c: StreamConnection, now: Timestamp) {
        switch c.flush(now: now) {
        case .done:
            if c.watchingWritable {
                c.watchingWritable = false
                try? loop.modify(fd: c.socket.fd, readable: true, writable: false)
            }
        case .blocked:
            if !c.watchingWritable {
                c.watchingWritable = true
                try? loop.modify(fd: c.socket.fd, readable: true, writable: true)
            }
        case .failed:
            closeStream(c, .reset)
        }
    }

    /// Closes a client connection; its allocation ends with it.
    func closeStream(_ c: StreamConnection, _ reason: StreamCloseReason) {
        guard c.isOpen else { return }
        c.isOpen = false
        // Queued datagrams to peers may point into this connection's input buffer.
        if let s = peerQueueSocket, peerQueue.pending > 0, s.isOpen { sendDropped += UInt64(peerQueue.flush(on: s).dropped) }
        loop.unregister(fd: c.socket.fd)
        c.socket.close()
        connections[c.tuple] = nil
        directory.releaseConnection(c.tuple.client.ip)
        streamCounters.closed[reason.rawValue] += 1
        server.connectionClosed(c.tuple)
    }

    /// Once a second: connections that never allocated in time, and readers that stopped reading.
    func streamHousekeeping(_ now: Timestamp) {
        guard !connections.isEmpty else { return }
        var expired: [(StreamConnection, StreamCloseReason)] = []
        for c in connections.values {
            if !c.authenticated && now - c.acceptedAt >= streamLimits.allocateTimeout {
                expired.append((c, .noAllocation))
            } else if c.pendingOutput > 0 && now - c.lastProgress >= streamLimits.stallTimeout {
                expired.append((c, .stalled))
            }
        }
        for (c, reason) in expired { closeStream(c, reason) }
        if !expired.isEmpty { drainEvents() }
    }

    /// Server events about TCP allocations: created (the connection has authenticated), deleted
    /// other than by the connection closing (refresh 0, expiry: the connection goes with it).
    func streamAllocationEvent(_ e: ServerEvent) {
        switch e {
        case .allocationCreated(let t, _, _, _) where t.transport == .tcp:
            connections[t]?.authenticated = true
        case .allocationDeleted(let t, let reason) where t.transport == .tcp && reason != .connectionClosed:
            if let c = connections[t] {
                flushStream(c, now: MonotonicClock.now())  // the Refresh answer first
                closeStream(c, .allocationEnded)
            }
        default:
            break
        }
    }
}
