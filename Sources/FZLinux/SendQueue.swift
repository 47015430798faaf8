#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// A preallocated `sendmmsg` batch: `count` slots of `capacity` bytes, two `iovec`s per slot, a
/// `sockaddr_storage` per slot and the `mmsghdr`s, all allocated once in `init`.
///
/// Use: `enqueue` until it returns false (full) or the iteration ends, then `flush(on:)`.
///
/// Backpressure policy: **drop**. When `sendmmsg` reports EAGAIN (socket send buffer full), ENOBUFS
/// or ENOMEM, the datagrams not yet sent are dropped and counted, and the queue is empty again after
/// every `flush`. UDP is lossy anyway, the peers' protocols (ICE, TURN, WireGuard) retransmit, and a
/// queue that kept datagrams would have to keep the gather payloads alive too (see
/// `enqueue(header:payload:to:)`). A caller that wants to wait can check `dropped` and watch EPOLLOUT.
///
/// Per-destination errors (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EMSGSIZE, EPERM from a firewall,
/// EINVAL for an unusable address, EAFNOSUPPORT for the other family...) skip that one datagram, count
/// it as dropped, and the rest of the batch is sent.
///
/// UDP GSO (`segmentation: true`, Linux 4.18+ with `UDP_SEGMENT`): at `flush`, runs of consecutive
/// datagrams to the same destination with the same length (the run's last one may be shorter) go
/// out as **one** message with a `UDP_SEGMENT` control message; the kernel splits it into the same
/// datagrams on the wire, after one trip down the stack instead of one per datagram. A run holds at
/// most `maxSegments` datagrams and `maxSegmentedBytes` bytes. When the kernel refuses a segmented
/// message (EINVAL: larger than the route's MTU allows; EIO: the device cannot checksum it), its
/// datagrams are sent one by one instead and counted in `segmentationFallbacks`; after EIO the
/// queue stops segmenting. Nothing changes on the wire: receivers see the same datagrams.
///
/// Unsafe assumptions: the `mmsghdr`s point into the slot, iovec and address arrays, set once and
/// valid until `deallocate()`. Not thread-safe: one queue belongs to one event loop thread.
public final class SendQueue {
    /// Slots per batch.
    public let count: Int
    /// Bytes per slot: the largest datagram `enqueue` can copy.
    public let capacity: Int
    // The counters below change per datagram on one loop thread (the type is not thread-safe by
    // contract), so they skip the runtime's dynamic exclusivity checks.
    /// Datagrams waiting for `flush`.
    @exclusivity(unchecked) public private(set) var pending = 0
    /// Totals since creation, for metrics.
    @exclusivity(unchecked) public private(set) var totalSent = 0
    @exclusivity(unchecked) public private(set) var totalDropped = 0
    /// The errno of the last dropped datagram (0 if none yet), for diagnostics.
    @exclusivity(unchecked) public private(set) var lastErrno: Int32 = 0
    /// Whether `flush` coalesces runs with UDP GSO: asked for in `init`, offered by the kernel, and
    /// not yet refused by the device (see the type's documentation).
    public private(set) var segmentation: Bool
    /// Datagrams that left inside a segmented (GSO) message, and the messages they took.
    @exclusivity(unchecked) public private(set) var totalSegmented = 0
    @exclusivity(unchecked) public private(set) var totalSegmentedMessages = 0
    /// Segmented messages the kernel refused, whose datagrams were then sent one by one.
    @exclusivity(unchecked) public private(set) var segmentationFallbacks = 0

    /// At most this many datagrams per segmented message (the kernel's UDP_MAX_SEGMENTS is 64 on
    /// older kernels, 128 on newer ones).
    public static let maxSegments = 64
    /// At most this many bytes per segmented message: below 64 KiB minus IP and UDP headers.
    public static let maxSegmentedBytes = 65_000

    private let slab: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_storage>
    private let messages: UnsafeMutablePointer<cfz_mmsghdr>
    /// Bytes of datagram `i` (header + payload).
    private let lengths: UnsafeMutablePointer<Int>
    // The GSO path's own arrays, filled at `flush`: the messages as they go to the kernel, their
    // iovecs (the slots' iovecs, copied contiguously), a UDP_SEGMENT control message each, and
    // for each message its first slot and how many datagrams it carries.
    private let wire: UnsafeMutablePointer<cfz_mmsghdr>
    private let wireIovecs: UnsafeMutablePointer<iovec>
    private let wireControl: UnsafeMutableRawPointer
    private let wireFirst: UnsafeMutablePointer<Int>
    private let wireDatagrams: UnsafeMutablePointer<Int>
    private let controlSpace: Int
    private var isDeallocated = false

    /// - Parameter segmentation: coalesce runs to one destination with UDP GSO where the kernel
    ///   offers it (`SocketOptions.supportsUDPSegment`).
    public init(count: Int = 64, capacity: Int = 2048, segmentation: Bool = false) {
        precondition(count > 0 && count <= 1024, "SendQueue count must be in 1...1024 (UIO_MAXIOV)")
        precondition(capacity > 0, "SendQueue needs a positive capacity")
        self.count = count
        self.capacity = capacity
        self.segmentation = segmentation && SocketOptions.supportsUDPSegment
        slab = UnsafeMutableRawPointer.allocate(byteCount: count * capacity, alignment: 64)
        iovecs = .allocate(capacity: 2 * count)
        iovecs.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: 2 * count)
        addresses = .allocate(capacity: count)
        addresses.initialize(repeating: sockaddr_storage(), count: count)
        messages = .allocate(capacity: count)
        for i in 0..<count {
            var header = msghdr()
            header.msg_name = UnsafeMutableRawPointer(addresses + i)
            header.msg_namelen = 0
            header.msg_iov = iovecs + 2 * i
            header.msg_iovlen = 1
            header.msg_control = nil
            header.msg_controllen = 0
            header.msg_flags = 0
            (messages + i).initialize(to: cfz_mmsghdr(msg_hdr: header, msg_len: 0))
        }
        lengths = .allocate(capacity: count)
        lengths.initialize(repeating: 0, count: count)
        controlSpace = cfz_cmsg_space(MemoryLayout<UInt16>.size)
        wire = .allocate(capacity: count)
        wire.initialize(repeating: cfz_mmsghdr(msg_hdr: msghdr(), msg_len: 0), count: count)
        wireIovecs = .allocate(capacity: 2 * count)
        wireIovecs.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: 2 * count)
        wireControl = .allocate(byteCount: controlSpace * count, alignment: MemoryLayout<cmsghdr>.alignment)
        wireControl.initializeMemory(as: UInt8.self, repeating: 0, count: controlSpace * count)
        wireFirst = .allocate(capacity: count)
        wireFirst.initialize(repeating: 0, count: count)
        wireDatagrams = .allocate(capacity: count)
        wireDatagrams.initialize(repeating: 0, count: count)
        // Every control message is the same UDP_SEGMENT header; only its 16-bit value changes.
        for i in 0..<count {
            var header = cmsghdr()
            header.cmsg_len = cfz_cmsg_len(MemoryLayout<UInt16>.size)
            header.cmsg_level = CFZ_SOL_UDP
            header.cmsg_type = CFZ_UDP_SEGMENT
            (wireControl + i * controlSpace).storeBytes(of: header, as: cmsghdr.self)
        }
    }

    deinit { deallocate() }

    /// Frees every buffer (idempotent); pending datagrams are discarded.
    public func deallocate() {
        guard !isDeallocated else { return }
        isDeallocated = true
        pending = 0
        messages.deinitialize(count: count)
        messages.deallocate()
        addresses.deinitialize(count: count)
        addresses.deallocate()
        iovecs.deinitialize(count: 2 * count)
        iovecs.deallocate()
        slab.deallocate()
        lengths.deallocate()
        wire.deinitialize(count: count)
        wire.deallocate()
        wireIovecs.deallocate()
        wireControl.deallocate()
        wireFirst.deallocate()
        wireDatagrams.deallocate()
    }

    public var isFull: Bool { pending == count }

    /// Copies `bytes` (at most `capacity`) into the next slot. False when the queue is full: flush, then
    /// enqueue again.
    @inline(__always)
    public func enqueue(_ bytes: UnsafeRawBufferPointer, to destination: SocketAddress) -> Bool {
        enqueue(to: destination, length: bytes.count) { slot in
            if bytes.count > 0 { slot.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        }
    }

    /// Reserves `length` bytes (at most `capacity`) in the next slot and lets `fill` write the datagram
    /// in place. `fill` must write all `length` bytes. False when the queue is full.
    @inline(__always)
    public func enqueue(
        to destination: SocketAddress, length: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) -> Bool {
        precondition(!isDeallocated, "enqueue on a deallocated SendQueue")
        precondition(length >= 0 && length <= capacity, "datagram longer than the SendQueue's capacity")
        guard pending < count else { return false }
        let i = pending
        let slot = slab + i * capacity
        fill(UnsafeMutableRawBufferPointer(start: slot, count: length))
        iovecs[2 * i] = iovec(iov_base: slot, iov_len: length)
        lengths[i] = length
        messages[i].msg_hdr.msg_iovlen = 1
        messages[i].msg_hdr.msg_namelen = destination.write(to: addresses + i)
        pending = i + 1
        return true
    }

    /// Sends `header` followed by `payload` as one datagram through a 2-element iovec: the header
    /// (at most `capacity`) is copied into the slot, the payload is **not copied**.
    ///
    /// The payload memory must stay valid and unchanged until the next `flush` returns — e.g. a
    /// `ReceivePool` payload, flushed before the pool's next `receive`. False when the queue is full.
    @inline(__always)
    public func enqueue(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, to destination: SocketAddress) -> Bool {
        precondition(!isDeallocated, "enqueue on a deallocated SendQueue")
        precondition(header.count <= capacity, "header longer than the SendQueue's capacity")
        guard pending < count else { return false }
        let i = pending
        let slot = slab + i * capacity
        if header.count > 0 { slot.copyMemory(from: header.baseAddress!, byteCount: header.count) }
        iovecs[2 * i] = iovec(iov_base: slot, iov_len: header.count)
        // The kernel only reads through iov_base on send; the mutable pointer type is the C API's.
        iovecs[2 * i + 1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
        lengths[i] = header.count + payload.count
        messages[i].msg_hdr.msg_iovlen = 2
        messages[i].msg_hdr.msg_namelen = destination.write(to: addresses + i)
        pending = i + 1
        return true
    }

    /// Sends everything pending with as few `sendmmsg` calls as the kernel allows (runs coalesced
    /// with GSO when `segmentation` is on), and empties the queue. See the type's documentation for
    /// what is dropped and why.
    @discardableResult
    public func flush(on socket: UDPSocket) -> (sent: Int, dropped: Int) {
        precondition(!isDeallocated, "flush on a deallocated SendQueue")
        precondition(socket.isOpen, "flush on a closed UDPSocket")
        let total = pending
        guard total > 0 else { return (0, 0) }
        let result: (sent: Int, dropped: Int)
        if segmentation, total > 1 {
            let messageCount = buildWire(total)
            result = messageCount < total ? sendWire(socket.fd, messageCount) : sendSlots(socket.fd, 0, total)
        } else {
            result = sendSlots(socket.fd, 0, total)
        }
        pending = 0
        totalSent += result.sent
        totalDropped += result.dropped
        return result
    }

    /// Sends slots `from..<to` one datagram per message.
    private func sendSlots(_ fd: Int32, _ from: Int, _ to: Int) -> (sent: Int, dropped: Int) {
        var start = from
        var sent = 0
        var dropped = 0
        while start < to {
            let batch = messages + start
            let vlen = UInt32(to - start)
            let (result, code) = Syscall.run("sendmmsg") { cfz_sendmmsg(fd, batch, vlen, 0) }
            if code == 0 {
                // sendmmsg returns at least 1 for vlen >= 1; guard anyway so a 0 cannot loop forever.
                let n = max(Int(result), 1)
                sent += min(n, to - start)
                start += n
                continue
            }
            lastErrno = code
            switch code {
            case EAGAIN, EWOULDBLOCK, ENOBUFS, ENOMEM:
                dropped += to - start
                start = to
            default:
                // The datagram at `start` failed; the ones before it in this call were sent.
                dropped += 1
                start += 1
            }
        }
        return (sent, dropped)
    }

    @inline(__always)
    private func sameDestination(_ a: Int, _ b: Int) -> Bool {
        let length = messages[a].msg_hdr.msg_namelen
        guard length == messages[b].msg_hdr.msg_namelen else { return false }
        return memcmp(addresses + a, addresses + b, Int(length)) == 0
    }

    /// Groups the pending slots into wire messages: a run of equal-length datagrams to one
    /// destination (the last may be shorter) becomes one message with a UDP_SEGMENT control
    /// message. Returns the number of wire messages.
    private func buildWire(_ total: Int) -> Int {
        var k = 0
        var iov = 0
        var i = 0
        while i < total {
            let size = lengths[i]
            var j = i + 1
            var bytes = size
            if size > 0 {
                while j < total, j - i < Self.maxSegments, lengths[j] <= size, bytes + lengths[j] <= Self.maxSegmentedBytes,
                    lengths[j] > 0, sameDestination(i, j)
                {
                    bytes += lengths[j]
                    j += 1
                    if lengths[j - 1] < size { break }
                }
            }
            let firstIov = iov
            for slot in i..<j {
                let n = messages[slot].msg_hdr.msg_iovlen
                for e in 0..<Int(n) where iovecs[2 * slot + e].iov_len > 0 || n == 1 {
                    wireIovecs[iov] = iovecs[2 * slot + e]
                    iov += 1
                }
            }
            var header = msghdr()
            header.msg_name = UnsafeMutableRawPointer(addresses + i)
            header.msg_namelen = messages[i].msg_hdr.msg_namelen
            header.msg_iov = wireIovecs + firstIov
            header.msg_iovlen = iov - firstIov
            if j - i > 1 {
                let control = wireControl + k * controlSpace
                (control + cfz_cmsg_len(0)).storeBytes(of: UInt16(size), as: UInt16.self)
                header.msg_control = control
                header.msg_controllen = controlSpace
            }
            wire[k] = cfz_mmsghdr(msg_hdr: header, msg_len: 0)
            wireFirst[k] = i
            wireDatagrams[k] = j - i
            k += 1
            i = j
        }
        return k
    }

    /// Sends the wire messages built by `buildWire`.
    private func sendWire(_ fd: Int32, _ messageCount: Int) -> (sent: Int, dropped: Int) {
        var start = 0
        var sent = 0
        var dropped = 0
        while start < messageCount {
            let batch = wire + start
            let vlen = UInt32(messageCount - start)
            let (result, code) = Syscall.run("sendmmsg") { cfz_sendmmsg(fd, batch, vlen, 0) }
            if code == 0 {
                let n = min(max(Int(result), 1), messageCount - start)
                for m in start..<start + n where wireDatagrams[m] > 1 {
                    totalSegmented += wireDatagrams[m]
                    totalSegmentedMessages += 1
                }
                for m in start..<start + n { sent += wireDatagrams[m] }
                start += n
                continue
            }
            lastErrno = code
            switch code {
            case EAGAIN, EWOULDBLOCK, ENOBUFS, ENOMEM:
                for m in start..<messageCount { dropped += wireDatagrams[m] }
                start = messageCount
            case EINVAL, EIO, EMSGSIZE:
                if wireDatagrams[start] > 1 {
                    // The kernel refused the segmented message, not necessarily its datagrams.
                    segmentationFallbacks += 1
                    if code == EIO { segmentation = false }
                    let r = sendSlots(fd, wireFirst[start], wireFirst[start] + wireDatagrams[start])
                    sent += r.sent
                    dropped += r.dropped
                } else {
                    dropped += 1
                }
                start += 1
            default:
                // A per-destination error: every datagram of this message shares the destination.
                dropped += wireDatagrams[start]
                start += 1
            }
        }
        return (sent, dropped)
    }
}
