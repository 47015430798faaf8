// fz-forwarder: the floor for relay benchmarks (scripts/bench-relay.sh, docs/performance.md).
//
// A bare UDP forwarder with the data path of a TURN relay and none of its logic: no STUN, no
// authentication, no permissions, no allocation table beyond one dictionary lookup. What a relay
// costs above this floor is the price of TURN; what this costs is the price of the kernel's
// UDP stack and of batching with recvmmsg/sendmmsg on one thread.
//
//   client --ChannelData--> [listen socket] --payload--> (per-client socket) --> peer
//   client <--ChannelData-- [listen socket] <--payload-- (per-client socket) <-- peer
//
// A ChannelData frame (RFC 8656 §12.4) from a client loses its 4-byte header and goes to the peer
// from a socket of that client's own (created on its first frame and registered with the epoll
// loop, like a relayed socket); what the peer sends to that socket gets the header back (written
// into the receive pool's headroom, no copy) and goes to the client. One thread, batches of 64.
#if canImport(Glibc)
import Glibc
#endif
import FZCore
import FZLinux

/// One client's flow: its address, the channel number it used, and the socket facing the peer.
final class Flow {
    let client: SocketAddress
    let socket: UDPSocket
    var channel: UInt16
    init(client: SocketAddress, socket: UDPSocket, channel: UInt16) {
        self.client = client
        self.socket = socket
        self.channel = channel
    }
}

/// Loop-confined: everything runs on the thread inside `loop.run()`.
final class Forwarder {
    static let headerSize = 4

    let loop: EventLoop
    let listener: UDPSocket
    let peer: SocketAddress
    let maxClients: Int
    let pool: ReceivePool
    /// ChannelData frames to clients, all from `listener`.
    let clientQueue: SendQueue
    /// Payloads to the peer from `peerQueueSocket`; flushed when the next one leaves from another
    /// socket (sendmmsg sends from one descriptor), as the relay does.
    let peerQueue: SendQueue
    var peerQueueSocket: UDPSocket?
    var flows: [SocketAddress: Flow] = [:]
    var malformed: UInt64 = 0
    var refusedClients: UInt64 = 0

    init(listen: SocketAddress, peer: SocketAddress, batch: Int, maxClients: Int) throws(SystemError) {
        loop = try EventLoop()
        listener = try UDPSocket(bindingTo: listen, receiveBufferSize: 4 << 20, sendBufferSize: 4 << 20)
        self.peer = peer
        self.maxClients = maxClients
        pool = ReceivePool(count: batch, capacity: 2048, headroom: 64)
        // Both directions send without copying (header in the headroom or no header at all), so a
        // slot only ever holds a zero-length header: capacity 1 is enough.
        clientQueue = SendQueue(count: batch, capacity: 1)
        peerQueue = SendQueue(count: batch, capacity: 1)
        try loop.register(fd: listener.fd) { [unowned self] _ in self.clientReadable() }
    }

    func clientReadable() {
        let n: Int
        do {
            n = try pool.receive(from: listener)
        } catch {
            say("\(error)")
            return
        }
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        for i in 0..<n {
            if pool.truncated(i) {
                malformed += 1
                continue
            }
            let frame = UnsafeRawBufferPointer(pool.payload(i))
            guard frame.count >= Self.headerSize else {
                malformed += 1
                continue
            }
            let channel = UInt16(frame[0]) << 8 | UInt16(frame[1])
            let length = Int(UInt16(frame[2]) << 8 | UInt16(frame[3]))
            guard channel & 0xC000 == 0x4000, length <= frame.count - Self.headerSize else {
                malformed += 1
                continue
            }
            let source = pool.source(i)
            let flow: Flow
            if let existing = flows[source] {
                flow = existing
            } else if let created = openFlow(for: source, channel: channel) {
                flow = created
            } else {
                continue
            }
            flow.channel = channel
            if let current = peerQueueSocket, current !== flow.socket, peerQueue.pending > 0 {
                peerQueue.flush(on: current)
            }
            peerQueueSocket = flow.socket
            let payload = UnsafeRawBufferPointer(rebasing: frame[Self.headerSize..<Self.headerSize + length])
            if !peerQueue.enqueue(header: empty, payload: payload, to: peer) {
                peerQueue.flush(on: flow.socket)
                _ = peerQueue.enqueue(header: empty, payload: payload, to: peer)
            }
        }
        // Flushed before the pool is reused: the queue's iovecs point into it.
        if let s = peerQueueSocket, peerQueue.pending > 0 { peerQueue.flush(on: s) }
    }

    func flowReadable(_ flow: Flow) {
        let n: Int
        do {
            n = try pool.receive(from: flow.socket)
        } catch {
            say("\(error)")
            return
        }
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        for i in 0..<n {
            let payload = pool.payload(i)
            if pool.truncated(i) || payload.count > 0xFFFF {
                malformed += 1
                continue
            }
            // The header goes into the headroom right in front of the payload: one contiguous datagram.
            let start = payload.baseAddress! - Self.headerSize
            start.storeBytes(of: flow.channel.bigEndian, toByteOffset: 0, as: UInt16.self)
            start.storeBytes(of: UInt16(payload.count).bigEndian, toByteOffset: 2, as: UInt16.self)
            let datagram = UnsafeRawBufferPointer(start: start, count: payload.count + Self.headerSize)
            if !clientQueue.enqueue(header: empty, payload: datagram, to: flow.client) {
                clientQueue.flush(on: listener)
                _ = clientQueue.enqueue(header: empty, payload: datagram, to: flow.client)
            }
        }
        if clientQueue.pending > 0 { clientQueue.flush(on: listener) }
    }

    func openFlow(for client: SocketAddress, channel: UInt16) -> Flow? {
        guard flows.count < maxClients else {
            refusedClients += 1
            return nil
        }
        let local: SocketAddress
        switch peer.ip {
        case .v4: local = SocketAddress(.loopback as IPv4Address, 0)
        case .v6: local = SocketAddress(.loopback as IPv6Address, 0)
        }
        do {
            let socket = try UDPSocket(bindingTo: local, receiveBufferSize: 1 << 20)
            let flow = Flow(client: client, socket: socket, channel: channel)
            try loop.register(fd: socket.fd) { [unowned self, unowned flow] _ in self.flowReadable(flow) }
            flows[client] = flow
            return flow
        } catch {
            say("cannot open a socket for \(client): \(error)")
            refusedClients += 1
            return nil
        }
    }
}

func writeStderr(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

func say(_ line: String) { writeStderr("fz-forwarder: \(line)\n") }

// MARK: command line (no ArgumentParser: this target depends on FZCore and FZLinux only)

func usage(_ message: String? = nil) -> Never {
    if let message { say(message) }
    writeStderr("""
        usage: fz-forwarder --listen 127.0.0.1:PORT --peer 127.0.0.1:PORT [--batch 64] [--max-clients 4096]

        A bare recvmmsg/sendmmsg UDP forwarder, the floor for relay benchmarks: ChannelData frames
        from a client lose their 4-byte header and go to the peer from a per-client socket; what
        the peer sends back gets the header again and goes to the client. Loopback addresses only.

        """)
    exit(message == nil ? 0 : 64)
}

func isLoopback(_ address: SocketAddress) -> Bool {
    switch address.ip {
    case .v4(let a): a.value >> 24 == 127
    case .v6(let a): a == .loopback
    }
}

var listen: SocketAddress?
var peer: SocketAddress?
var batch = 64
var maxClients = 4096
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    if flag == "-h" || flag == "--help" { usage() }
    guard let value = arguments.popFirst() else { usage("\(flag) needs a value") }
    switch flag {
    case "--listen": listen = SocketAddress(value)
    case "--peer": peer = SocketAddress(value)
    case "--batch": batch = Int(value) ?? 0
    case "--max-clients": maxClients = Int(value) ?? 0
    default: usage("unknown option \(flag)")
    }
}
guard let listen, let peer else { usage("--listen and --peer are required (ADDRESS:PORT)") }
guard isLoopback(listen), isLoopback(peer) else { usage("only loopback addresses (127.0.0.0/8, ::1) are allowed") }
guard listen.family == peer.family else { usage("--listen and --peer must be of the same address family") }
guard (1...1024).contains(batch), maxClients > 0 else { usage("--batch must be 1...1024 and --max-clients positive") }

do {
    let forwarder = try Forwarder(listen: listen, peer: peer, batch: batch, maxClients: maxClients)
    say("listening on \(forwarder.listener.localAddress), peer \(peer), batch \(batch)")
    forwarder.loop.run()
} catch {
    say("\(error)")
    exit(1)
}
