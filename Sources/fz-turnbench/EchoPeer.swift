#if canImport(Glibc)
import Glibc
#endif
import FZCore
import FZLinux
import Synchronization

/// The in-process echo peer: one UDP socket on loopback served by its own event-loop thread. Every
/// datagram goes back to where it came from (the relayed address), unchanged and uncopied: the send
/// queue's iovec points into the receive pool, and the batch is flushed before the pool is reused.
final class EchoPeer: @unchecked Sendable {
    // `@unchecked Sendable`: `socket`, `pool`, `queue` are touched only by the loop thread after
    // `start()`; the counters other threads read are atomics; `address` is immutable.
    let loop: EventLoop
    let socket: UDPSocket
    let pool: ReceivePool
    let queue: SendQueue
    /// Datagrams received: each one is a datagram the server relayed from a client to the peer.
    let received = Atomic<UInt64>(0)
    let sendDropped = Atomic<UInt64>(0)
    /// The loop thread's pthread id once it runs (0 before), for its CPU clock.
    let threadID = Atomic<UInt>(0)
    private var thread: EventLoopThread?

    var address: SocketAddress { socket.localAddress }

    /// - Parameter offload: read with UDP GRO and send runs with UDP GSO (a GRO read goes back as
    ///   one segmented message).
    init(bindingTo address: SocketAddress, offload: Bool) throws(SystemError) {
        loop = try EventLoop()
        socket = try UDPSocket(bindingTo: address, receiveBufferSize: 8 << 20, sendBufferSize: 8 << 20)
        let gro = offload && SocketOptions.supportsUDPGRO
        if gro { try SocketOptions.setUDPGRO(socket, enabled: true) }
        pool = ReceivePool(count: 64, capacity: gro ? 65_535 : 2048, headroom: 0, coalescing: gro)
        // GRO reads hold up to 64 datagrams each: room for every one of a full batch.
        queue = SendQueue(count: gro ? 1024 : 64, capacity: 1, segmentation: offload)
        try loop.register(fd: socket.fd) { [unowned self] _ in self.readable() }
    }

    func start() throws(SystemError) {
        thread = try loop.start(name: "tb-peer")
        loop.execute { [self] in threadID.store(pthread_self(), ordering: .relaxed) }
    }

    func stop() {
        loop.stop()
        thread?.join()
    }

    private func readable() {
        let n: Int
        do {
            n = try pool.receive(from: socket)
        } catch {
            return
        }
        guard n > 0 else { return }
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        var datagrams = 0
        var dropped = 0
        for i in 0..<n {
            let source = pool.source(i)
            pool.forEachSegment(i) { datagram in
                datagrams += 1
                if !queue.enqueue(header: empty, payload: UnsafeRawBufferPointer(datagram), to: source) {
                    dropped += queue.flush(on: socket).dropped
                    _ = queue.enqueue(header: empty, payload: UnsafeRawBufferPointer(datagram), to: source)
                }
            }
        }
        dropped += queue.flush(on: socket).dropped
        received.add(UInt64(datagrams), ordering: .relaxed)
        if dropped > 0 { sendDropped.add(UInt64(dropped), ordering: .relaxed) }
    }
}
