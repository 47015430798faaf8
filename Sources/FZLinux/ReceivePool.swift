#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore

/// A preallocated `recvmmsg` batch: `count` slots of `headroom + capacity` bytes, their `iovec`s,
/// `sockaddr_storage`s and `mmsghdr`s, all allocated once in `init` and wired together there.
///
/// The kernel writes datagram *i* at `headroomPointer(i) + headroom`, so a caller can prepend a
/// header (a 4-byte ChannelData header, RFC 8656 §12.4, or a WireGuard header) in place and hand
/// `payload(i).baseAddress! - n ..< payload end` to a `SendQueue` as one buffer, without building a
/// new one (`enqueue(header:payload:to:)` with an empty header even sends it uncopied, if flushed before
/// the next `receive`).
///
/// UDP GRO (`coalescing: true`; enable `SocketOptions.setUDPGRO` on the sockets too): the kernel may
/// hand over several datagrams of one flow, all of one size but the last, as one read with a
/// `UDP_GRO` control message. `segmentSize(i)` reports that size; the datagrams are
/// `payload(i)` cut every `segmentSize(i)` bytes (`segments(i)` does the cutting). Only their
/// first has headroom: the rest follow each other without a gap. A pool that coalesces needs a
/// `capacity` of 65,535 (a GRO read is up to 64 KiB; a smaller slot would cut it).
///
/// Unsafe assumptions, written down:
/// - The `mmsghdr`s point into the other arrays; those pointers are set once and stay valid until
///   `deallocate()`. Nothing here ever reallocates.
/// - Results (`payload`, `source`, `truncated`) describe the *last* `receive` call and are
///   overwritten by the next one; a buffer pointer handed out must not be used after that (or after
///   `deallocate()`).
/// - Not thread-safe: one pool belongs to one event loop thread.
public final class ReceivePool {
    /// Slots per `recvmmsg` call.
    public let count: Int
    /// The largest datagram stored whole; longer ones are cut and flagged `truncated`.
    public let capacity: Int
    /// Bytes reserved in front of each payload.
    public let headroom: Int
    /// Datagrams held from the last `receive` (valid indices are `0..<received`).
    /// (Changed per read on one loop thread: no dynamic exclusivity checks.)
    @exclusivity(unchecked) public private(set) var received = 0
    /// ICMP-reported errors (ECONNREFUSED, EHOSTUNREACH...) that `recvmmsg` consumed and skipped.
    public private(set) var softErrors = 0

    private let slotStride: Int
    private let slab: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_storage>
    private let messages: UnsafeMutablePointer<cfz_mmsghdr>
    /// One control buffer per slot when coalescing (nil otherwise).
    private let control: UnsafeMutableRawPointer?
    private let controlSpace: Int
    /// Whether reads carry `UDP_GRO` control messages (see the type's documentation).
    public let coalescing: Bool
    private var isDeallocated = false

    public init(count: Int = 64, capacity: Int = 2048, headroom: Int = 64, coalescing: Bool = false) {
        precondition(count > 0 && count <= 1024, "ReceivePool count must be in 1...1024 (UIO_MAXIOV)")
        precondition(capacity > 0 && headroom >= 0, "ReceivePool needs a positive capacity and non-negative headroom")
        self.count = count
        self.capacity = capacity
        self.headroom = headroom
        self.coalescing = coalescing
        controlSpace = coalescing ? cfz_cmsg_space(MemoryLayout<Int32>.size) : 0
        if coalescing {
            let c = UnsafeMutableRawPointer.allocate(byteCount: controlSpace * count, alignment: MemoryLayout<cmsghdr>.alignment)
            c.initializeMemory(as: UInt8.self, repeating: 0, count: controlSpace * count)
            control = c
        } else {
            control = nil
        }
        // Slots start on cache-line boundaries, so payloads of neighbouring slots never share a line.
        slotStride = (headroom + capacity + 63) & ~63
        slab = UnsafeMutableRawPointer.allocate(byteCount: slotStride * count, alignment: 64)
        iovecs = .allocate(capacity: count)
        addresses = .allocate(capacity: count)
        messages = .allocate(capacity: count)
        addresses.initialize(repeating: sockaddr_storage(), count: count)
        for i in 0..<count {
            iovecs[i] = iovec(iov_base: slab + i * slotStride + headroom, iov_len: capacity)
            var header = msghdr()
            header.msg_name = UnsafeMutableRawPointer(addresses + i)
            header.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            header.msg_iov = iovecs + i
            header.msg_iovlen = 1
            header.msg_control = control.map { $0 + i * controlSpace }
            header.msg_controllen = controlSpace
            header.msg_flags = 0
            (messages + i).initialize(to: cfz_mmsghdr(msg_hdr: header, msg_len: 0))
        }
    }

    deinit { deallocate() }

    /// Frees every buffer (idempotent). Using the pool or any pointer it handed out afterwards is a bug.
    public func deallocate() {
        guard !isDeallocated else { return }
        isDeallocated = true
        received = 0
        messages.deinitialize(count: count)
        messages.deallocate()
        addresses.deinitialize(count: count)
        addresses.deallocate()
        iovecs.deallocate()
        slab.deallocate()
        control?.deallocate()
    }

    /// Reads up to `count` datagrams with one `recvmmsg`. Returns how many (0 when the socket has none:
    /// EAGAIN). EINTR is retried. Errors the kernel queued from ICMP (ECONNREFUSED, EHOSTUNREACH,
    /// ENETUNREACH, EHOSTDOWN, ENETDOWN) concern an earlier send, not this read: they are counted in
    /// `softErrors` and the read is retried. Anything else throws.
    public func receive(from socket: UDPSocket) throws(SystemError) -> Int {
        precondition(!isDeallocated, "receive on a deallocated ReceivePool")
        precondition(socket.isOpen, "receive from a closed UDPSocket")
        // The kernel rewrote msg_namelen (and msg_len/msg_flags) only for the slots it filled last time.
        let nameLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        for i in 0..<received {
            messages[i].msg_hdr.msg_namelen = nameLength
            messages[i].msg_hdr.msg_controllen = controlSpace
            messages[i].msg_hdr.msg_flags = 0
            messages[i].msg_len = 0
        }
        received = 0
        let fd = socket.fd
        let vlen = UInt32(count)
        var attempts = 0
        while true {
            let (result, code) = Syscall.run("recvmmsg") { cfz_recvmmsg(fd, messages, vlen, 0) }
            switch code {
            case 0:
                received = Int(result)
                return received
            case EAGAIN, EWOULDBLOCK:
                return 0
            case ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ENETDOWN:
                softErrors += 1
                attempts += 1
                // Each such error is consumed by the call that reports it; the bound only guards
                // against a kernel that keeps reporting one.
                if attempts >= 8 { return 0 }
            default:
                throw SystemError(errno: code, call: "recvmmsg")
            }
        }
    }

    /// The bytes of datagram `i` (at most `capacity`), writable in place.
    @inline(__always)
    public func payload(_ i: Int) -> UnsafeMutableRawBufferPointer {
        precondition(i >= 0 && i < received, "ReceivePool index out of range")
        let length = min(Int(messages[i].msg_len), capacity)
        return UnsafeMutableRawBufferPointer(start: slab + i * slotStride + headroom, count: length)
    }

    /// The start of slot `i`: `payload(i).baseAddress! - headroom`. Bytes between here and the payload
    /// are free for the caller to write a header into.
    @inline(__always)
    public func headroomPointer(_ i: Int) -> UnsafeMutableRawPointer {
        precondition(i >= 0 && i < count, "ReceivePool index out of range")
        return slab + i * slotStride
    }

    /// Where datagram `i` came from.
    @inline(__always)
    public func source(_ i: Int) -> SocketAddress {
        precondition(i >= 0 && i < received, "ReceivePool index out of range")
        guard let address = SocketAddress(sockaddr: addresses + i, length: messages[i].msg_hdr.msg_namelen) else {
            // A UDP socket of family AF_INET/AF_INET6 always reports a source of its own family.
            preconditionFailure("recvmmsg on a UDP socket returned a non-IP source address")
        }
        return address
    }

    /// Whether datagram `i` was longer than `capacity` and was cut (MSG_TRUNC).
    @inline(__always)
    public func truncated(_ i: Int) -> Bool {
        precondition(i >= 0 && i < received, "ReceivePool index out of range")
        return messages[i].msg_hdr.msg_flags & CFZ_MSG_TRUNC != 0
    }

    /// The size of the datagrams a GRO read of slot `i` holds (all but the last have exactly this
    /// size); `payload(i).count` when the read is one plain datagram.
    @inline(__always)
    public func segmentSize(_ i: Int) -> Int {
        precondition(i >= 0 && i < received, "ReceivePool index out of range")
        let length = min(Int(messages[i].msg_len), capacity)
        guard coalescing else { return length }
        var header = messages[i].msg_hdr
        guard header.msg_controllen >= cfz_cmsg_len(MemoryLayout<Int32>.size) else { return length }
        var cmsg = cfz_cmsg_firsthdr(&header)
        while let c = cmsg {
            if c.pointee.cmsg_level == CFZ_SOL_UDP, c.pointee.cmsg_type == CFZ_UDP_GRO {
                let size = Int(cfz_cmsg_data(c).loadUnaligned(as: Int32.self))
                return size > 0 ? min(size, max(length, 1)) : length
            }
            cmsg = cfz_cmsg_nxthdr(&header, c)
        }
        return length
    }

    /// Calls `body` with each datagram of slot `i`: one for a plain read, several for a GRO read.
    @inline(__always)
    public func forEachSegment(_ i: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) {
        let whole = payload(i)
        let size = segmentSize(i)
        guard size > 0, size < whole.count else {
            body(whole)
            return
        }
        var offset = 0
        while offset < whole.count {
            let end = min(offset + size, whole.count)
            body(UnsafeMutableRawBufferPointer(rebasing: whole[offset..<end]))
            offset = end
        }
    }
}
