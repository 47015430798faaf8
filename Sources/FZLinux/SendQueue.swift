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
/// Unsafe assumptions: the `mmsghdr`s point into the slot, iovec and address arrays, set once and
/// valid until `deallocate()`. Not thread-safe: one queue belongs to one event loop thread.
public final class SendQueue {
    /// Slots per batch.
    public let count: Int
    /// Bytes per slot: the largest datagram `enqueue` can copy.
    public let capacity: Int
    /// Datagrams waiting for `flush`.
    public private(set) var pending = 0
    /// Totals since creation, for metrics.
    public private(set) var totalSent = 0
    public private(set) var totalDropped = 0
    /// The errno of the last dropped datagram (0 if none yet), for diagnostics.
    public private(set) var lastErrno: Int32 = 0

    private let slab: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_storage>
    private let messages: UnsafeMutablePointer<cfz_mmsghdr>
    private var isDeallocated = false

    public init(count: Int = 64, capacity: Int = 2048) {
        precondition(count > 0 && count <= 1024, "SendQueue count must be in 1...1024 (UIO_MAXIOV)")
        precondition(capacity > 0, "SendQueue needs a positive capacity")
        self.count = count
        self.capacity = capacity
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
        messages[i].msg_hdr.msg_iovlen = 2
        messages[i].msg_hdr.msg_namelen = destination.write(to: addresses + i)
        pending = i + 1
        return true
    }

    /// Sends everything pending with as few `sendmmsg` calls as the kernel allows, and empties the
    /// queue. See the type's documentation for what is dropped and why.
    @discardableResult
    public func flush(on socket: UDPSocket) -> (sent: Int, dropped: Int) {
        precondition(!isDeallocated, "flush on a deallocated SendQueue")
        precondition(socket.isOpen, "flush on a closed UDPSocket")
        let total = pending
        guard total > 0 else { return (0, 0) }
        let fd = socket.fd
        var start = 0
        var sent = 0
        var dropped = 0
        while start < total {
            let batch = messages + start
            let vlen = UInt32(total - start)
            let (result, code) = Syscall.run("sendmmsg") { cfz_sendmmsg(fd, batch, vlen, 0) }
            if code == 0 {
                // sendmmsg returns at least 1 for vlen >= 1; guard anyway so a 0 cannot loop forever.
                let n = max(Int(result), 1)
                sent += min(n, total - start)
                start += n
                continue
            }
            lastErrno = code
            switch code {
            case EAGAIN, EWOULDBLOCK, ENOBUFS, ENOMEM:
                dropped += total - start
                start = total
            default:
                // The datagram at `start` failed; the ones before it in this call were sent.
                dropped += 1
                start += 1
            }
        }
        pending = 0
        totalSent += sent
        totalDropped += dropped
        return (sent, dropped)
    }
}
