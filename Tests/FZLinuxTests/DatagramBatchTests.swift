#if canImport(Glibc)
import Glibc
#endif
import FZCore
import FZLinux
import Testing

@Suite("ReceivePool and SendQueue")
struct DatagramBatchTests {
    /// Receives into `pool` until `expected` datagrams arrived or a bounded wait ends, handing each to `body`.
    static func drain(
        _ pool: ReceivePool, from socket: UDPSocket, expected: Int,
        _ body: (Int, ReceivePool) -> Void
    ) throws -> Int {
        var got = 0
        var failure: SystemError?
        waitUntil {
            do throws(SystemError) {
                while true {
                    let n = try pool.receive(from: socket)
                    if n == 0 { break }
                    for i in 0..<n { body(i, pool) }
                    got += n
                }
            } catch {
                failure = error
                return true
            }
            return got >= expected
        }
        if let failure { throw failure }
        return got
    }

    @Test("200 datagrams of varying sizes arrive intact, in batches, with their source", arguments: [loopbackV4, loopbackV6])
    func twoHundredDatagramsRoundTrip(address: SocketAddress) throws {
        let sender = try UDPSocket(bindingTo: address)
        let receiver = try UDPSocket(bindingTo: address, receiveBufferSize: 1 << 20)
        let queue = SendQueue(count: 32, capacity: 2048)
        let pool = ReceivePool(count: 16, capacity: 2048, headroom: 64)
        defer {
            queue.deallocate()
            pool.deallocate()
            sender.close()
            receiver.close()
        }

        let total = 200
        let sizes = (0..<total).map { $0 == 0 ? 0 : ($0 &* 97) % 1400 + 2 }
        var received: [Int: [UInt8]] = [:]
        var sources: Set<SocketAddress> = []
        var batches = 0
        var next = 0
        while next < total {
            // Fill one batch, send it, then drain the receiver so the socket buffer never overflows.
            var inBatch = 0
            while next < total {
                let datagram = patternDatagram(index: next, length: sizes[next])
                let accepted = datagram.withUnsafeBytes { queue.enqueue($0, to: receiver.localAddress) }
                if !accepted { break }
                next += 1
                inBatch += 1
            }
            #expect(queue.pending == inBatch)
            let result = queue.flush(on: sender)
            #expect(result.sent == inBatch)
            #expect(result.dropped == 0)
            #expect(queue.pending == 0)

            let before = next - inBatch
            let got = try Self.drain(pool, from: receiver, expected: inBatch) { i, pool in
                let bytes = Array(pool.payload(i))
                let index = bytes.count >= 2 ? Int(bytes[0]) << 8 | Int(bytes[1]) : 0
                received[index] = bytes
                sources.insert(pool.source(i))
                #expect(!pool.truncated(i))
            }
            #expect(got == inBatch, "after \(before) datagrams")
            batches += 1
        }

        #expect(batches == (total + 31) / 32)
        #expect(received.count == total)
        for index in 0..<total {
            #expect(received[index] == patternDatagram(index: index, length: sizes[index]), "datagram \(index)")
        }
        #expect(sources == [sender.localAddress])
        #expect(queue.totalSent == total)
        #expect(queue.totalDropped == 0)
    }

    @Test("a datagram longer than a slot is cut to capacity and flagged truncated")
    func truncationIsDetected() throws {
        let sender = try UDPSocket(bindingTo: loopbackV4)
        let receiver = try UDPSocket(bindingTo: loopbackV4)
        let pool = ReceivePool(count: 4, capacity: 100, headroom: 0)
        defer {
            pool.deallocate()
            sender.close()
            receiver.close()
        }
        let long = patternDatagram(index: 1, length: 300)
        let short = patternDatagram(index: 2, length: 50)
        try sender.sendOrFail(long, to: receiver.localAddress)
        try sender.sendOrFail(short, to: receiver.localAddress)

        var seen: [(bytes: [UInt8], truncated: Bool)] = []
        _ = try Self.drain(pool, from: receiver, expected: 2) { i, pool in
            seen.append((Array(pool.payload(i)), pool.truncated(i)))
        }
        try #require(seen.count == 2)
        #expect(seen[0].truncated)
        #expect(seen[0].bytes == Array(long[0..<100]))
        #expect(!seen[1].truncated)
        #expect(seen[1].bytes == short)
    }

    @Test("a header written into the headroom lands just before the payload and is sent with it")
    func headroomHoldsAPrependedHeader() throws {
        let client = try UDPSocket(bindingTo: loopbackV4)
        let relay = try UDPSocket(bindingTo: loopbackV4)
        let peer = try UDPSocket(bindingTo: loopbackV4)
        let pool = ReceivePool(count: 8, capacity: 1500, headroom: 16)
        let queue = SendQueue(count: 8, capacity: 1600)
        defer {
            pool.deallocate()
            queue.deallocate()
            client.close()
            relay.close()
            peer.close()
        }
        let datagram = patternDatagram(index: 3, length: 200)
        try client.sendOrFail(datagram, to: relay.localAddress)
        _ = try Self.drain(pool, from: relay, expected: 1) { i, pool in
            let payload = pool.payload(i)
            #expect(pool.headroomPointer(i) + pool.headroom == payload.baseAddress!)
            // A ChannelData header (RFC 8656 §12.4): channel 0x4001, length.
            let header = payload.baseAddress! - 4
            header.storeBytes(of: UInt16(0x4001).bigEndian, as: UInt16.self)
            header.storeBytes(of: UInt16(payload.count).bigEndian, toByteOffset: 2, as: UInt16.self)
            #expect(Array(payload) == datagram, "writing the header must not touch the payload")
            let framed = UnsafeRawBufferPointer(start: header, count: payload.count + 4)
            #expect(queue.enqueue(framed, to: peer.localAddress))
        }
        #expect(queue.flush(on: relay) == (sent: 1, dropped: 0))

        var buffer = [UInt8](repeating: 0, count: 2048)
        var count = 0
        waitUntil {
            if case .processed(let r)? = try? buffer.withUnsafeMutableBytes({ try peer.receive(into: $0) }) { count = r.count }
            return count > 0
        }
        #expect(Array(buffer[0..<count]) == [0x40, 0x01, 0x00, 200] + datagram)
    }

    @Test("a gathered header and payload arrive as one datagram")
    func gatherSendsHeaderAndPayload() throws {
        let sender = try UDPSocket(bindingTo: loopbackV6)
        let receiver = try UDPSocket(bindingTo: loopbackV6)
        let queue = SendQueue(count: 4, capacity: 64)
        let pool = ReceivePool(count: 4)
        defer {
            queue.deallocate()
            pool.deallocate()
            sender.close()
            receiver.close()
        }
        let header: [UInt8] = [0x40, 0x00, 0x01, 0x00]
        let payload = patternDatagram(index: 9, length: 256)  // longer than a slot: it is not copied
        let accepted = header.withUnsafeBytes { h in
            payload.withUnsafeBytes { p in queue.enqueue(header: h, payload: p, to: receiver.localAddress) }
        }
        #expect(accepted)
        // `payload` is alive until here, past the flush, as the API requires.
        let result = payload.withUnsafeBytes { _ in queue.flush(on: sender) }
        #expect(result == (sent: 1, dropped: 0))
        var got: [UInt8] = []
        _ = try Self.drain(pool, from: receiver, expected: 1) { i, pool in
            got = Array(pool.payload(i))
            #expect(pool.source(i) == sender.localAddress)
        }
        #expect(got == header + payload)
    }

    @Test("enqueue writes in place and refuses when the queue is full")
    func enqueueRefusesWhenFull() throws {
        let sender = try UDPSocket(bindingTo: loopbackV4)
        let receiver = try UDPSocket(bindingTo: loopbackV4)
        let queue = SendQueue(count: 3, capacity: 32)
        let pool = ReceivePool(count: 8)
        defer {
            queue.deallocate()
            pool.deallocate()
            sender.close()
            receiver.close()
        }
        for k in 0..<3 {
            let ok = queue.enqueue(to: receiver.localAddress, length: 8) { slot in
                for j in 0..<8 { slot[j] = UInt8(k * 10 + j) }
            }
            #expect(ok)
        }
        #expect(queue.isFull)
        #expect(!queue.enqueue(to: receiver.localAddress, length: 8) { _ in Issue.record("fill called on a full queue") })
        #expect(queue.flush(on: sender) == (sent: 3, dropped: 0))
        #expect(queue.pending == 0)
        var got: [[UInt8]] = []
        _ = try Self.drain(pool, from: receiver, expected: 3) { i, pool in got.append(Array(pool.payload(i))) }
        #expect(got == (0..<3).map { k in (0..<8).map { UInt8(k * 10 + $0) } })
    }

    @Test("a datagram the kernel refuses is skipped and counted, the rest of the batch is sent")
    func perDestinationErrorsSkipOneDatagram() throws {
        let sender = try UDPSocket(bindingTo: loopbackV6)
        let receiver = try UDPSocket(bindingTo: loopbackV6)
        let queue = SendQueue(count: 8, capacity: 64)
        let pool = ReceivePool(count: 8)
        defer {
            queue.deallocate()
            pool.deallocate()
            sender.close()
            receiver.close()
        }
        // An IPv4 destination cannot be reached from an IPv6-only socket.
        let unreachable = SocketAddress(IPv4Address.loopback, receiver.localAddress.port)
        let destinations = [receiver.localAddress, unreachable, receiver.localAddress, receiver.localAddress, unreachable]
        for (k, destination) in destinations.enumerated() {
            let ok = patternDatagram(index: k, length: 10).withUnsafeBytes { queue.enqueue($0, to: destination) }
            #expect(ok)
        }
        let result = queue.flush(on: sender)
        #expect(result == (sent: 3, dropped: 2))
        #expect(queue.lastErrno != 0)
        #expect(queue.totalDropped == 2)
        var indices: [Int] = []
        _ = try Self.drain(pool, from: receiver, expected: 3) { i, pool in indices.append(Int(pool.payload(i)[1])) }
        #expect(indices == [0, 2, 3])
    }

    @Test("an empty socket reads zero datagrams")
    func emptySocketReadsZero() throws {
        let socket = try UDPSocket(bindingTo: loopbackV4)
        let pool = ReceivePool(count: 4)
        defer {
            pool.deallocate()
            socket.close()
        }
        #expect(try pool.receive(from: socket) == 0)
        #expect(pool.received == 0)
    }
}
