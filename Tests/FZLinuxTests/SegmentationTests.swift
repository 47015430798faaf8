#if canImport(Glibc)
import Glibc
#endif
import FZCore
import FZLinux
import Testing

/// SendQueue's UDP GSO path against the real kernel: what leaves is exactly what was queued,
/// datagram for datagram, whether runs were coalesced or not.
@Suite("SendQueue segmentation (UDP GSO)", .enabled(if: SocketOptions.supportsUDPSegment))
struct SegmentationTests {
    static func receiveAll(_ receiver: UDPSocket, expected: Int) throws -> [(bytes: [UInt8], source: SocketAddress)] {
        let pool = ReceivePool(count: 64, capacity: 2048, headroom: 0)
        defer { pool.deallocate() }
        var got: [(bytes: [UInt8], source: SocketAddress)] = []
        _ = try DatagramBatchTests.drain(pool, from: receiver, expected: expected) { i, pool in
            got.append((Array(pool.payload(i)), pool.source(i)))
        }
        return got
    }

    @Test("runs of equal-size datagrams to one destination leave as segmented messages and arrive unchanged",
          arguments: [loopbackV4, loopbackV6])
    func runsArriveUnchanged(address: SocketAddress) throws {
        let sender = try UDPSocket(bindingTo: address)
        let a = try UDPSocket(bindingTo: address, receiveBufferSize: 1 << 20)
        let b = try UDPSocket(bindingTo: address, receiveBufferSize: 1 << 20)
        let queue = SendQueue(count: 64, capacity: 2048, segmentation: true)
        defer {
            queue.deallocate()
            sender.close()
            a.close()
            b.close()
        }
        #expect(queue.segmentation)
        // Runs: 8×a/1200 (last 700: ends the run), 5×b/100, 1×a/100, 3×b/1200, 2×b/1300 (longer: new run).
        var plan: [(UDPSocket, Int)] = []
        plan += Array(repeating: (a, 1200), count: 7) + [(a, 700)]
        plan += Array(repeating: (b, 100), count: 5)
        plan += [(a, 100)]
        plan += Array(repeating: (b, 1200), count: 3) + Array(repeating: (b, 1300), count: 2)
        for (k, (socket, length)) in plan.enumerated() {
            let ok = patternDatagram(index: k, length: length).withUnsafeBytes { queue.enqueue($0, to: socket.localAddress) }
            #expect(ok)
        }
        #expect(queue.flush(on: sender) == (sent: plan.count, dropped: 0))
        // 8 + 5 + 3 + 2 datagrams in segmented messages; the lone 100-byte one went alone.
        #expect(queue.totalSegmented == 18)
        #expect(queue.totalSegmentedMessages == 4)
        #expect(queue.segmentationFallbacks == 0)

        let expectedA = plan.enumerated().filter { $0.element.0 === a }.map { patternDatagram(index: $0.offset, length: $0.element.1) }
        let expectedB = plan.enumerated().filter { $0.element.0 === b }.map { patternDatagram(index: $0.offset, length: $0.element.1) }
        let gotA = try Self.receiveAll(a, expected: expectedA.count)
        let gotB = try Self.receiveAll(b, expected: expectedB.count)
        #expect(gotA.map(\.bytes) == expectedA)
        #expect(gotB.map(\.bytes) == expectedB)
        #expect(Set(gotA.map(\.source) + gotB.map(\.source)) == [sender.localAddress])
    }

    @Test("gathered header + payload entries are coalesced too (the relay's ChannelData paths)")
    func gatheredEntriesCoalesce() throws {
        let sender = try UDPSocket(bindingTo: loopbackV4)
        let receiver = try UDPSocket(bindingTo: loopbackV4, receiveBufferSize: 1 << 20)
        let queue = SendQueue(count: 16, capacity: 64, segmentation: true)
        // The payload memory outlives the flush, as `enqueue(header:payload:to:)` requires.
        let stride = 504
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 10 * stride, alignment: 8)
        defer {
            storage.deallocate()
            queue.deallocate()
            sender.close()
            receiver.close()
        }
        let header: [UInt8] = [0x40, 0x00, 0x01, 0xF4]
        let expected = (0..<10).map { header + patternDatagram(index: $0, length: 500) }
        for (k, datagram) in expected.enumerated() {
            let slot = UnsafeMutableRawBufferPointer(rebasing: storage[k * stride..<(k + 1) * stride])
            slot.copyBytes(from: datagram)
            let ok: Bool
            if k.isMultiple(of: 2) {
                // Header copied into the queue's slot, payload by reference (Data indications, tests).
                ok = header.withUnsafeBytes { h in
                    queue.enqueue(header: h, payload: UnsafeRawBufferPointer(rebasing: slot[4...]), to: receiver.localAddress)
                }
            } else {
                // One uncopied buffer with the header in the headroom (the relay's peer → client path).
                ok = queue.enqueue(header: UnsafeRawBufferPointer(start: nil, count: 0), payload: UnsafeRawBufferPointer(slot),
                                   to: receiver.localAddress)
            }
            #expect(ok)
        }
        #expect(queue.flush(on: sender) == (sent: 10, dropped: 0))
        #expect(queue.totalSegmented == 10)
        #expect(queue.totalSegmentedMessages == 1)
        #expect(try Self.receiveAll(receiver, expected: 10).map(\.bytes) == expected)
    }

    @Test("a segmented message the kernel refuses goes out datagram by datagram")
    func refusedSegmentationFallsBack() throws {
        let sender = try UDPSocket(bindingTo: loopbackV4)
        let receiver = try UDPSocket(bindingTo: loopbackV4, receiveBufferSize: 1 << 20)
        let queue = SendQueue(count: 16, capacity: 2048, segmentation: true)
        defer {
            queue.deallocate()
            sender.close()
            receiver.close()
        }
        // SO_NO_CHECK (send IPv4 UDP without checksums) makes the kernel refuse GSO with EINVAL
        // (udp_send_skb), while single datagrams still go: a real refusal, on demand.
        var one: Int32 = 1
        #expect(setsockopt(sender.fd, SOL_SOCKET, 11 /* SO_NO_CHECK */, &one, socklen_t(MemoryLayout<Int32>.size)) == 0)
        let expected = (0..<6).map { patternDatagram(index: $0, length: 300) }
        for d in expected { #expect(d.withUnsafeBytes { queue.enqueue($0, to: receiver.localAddress) }) }
        #expect(queue.flush(on: sender) == (sent: 6, dropped: 0))
        #expect(queue.segmentationFallbacks == 1)
        #expect(queue.totalSegmented == 0)
        #expect(queue.lastErrno == EINVAL)
        #expect(queue.segmentation, "EINVAL concerns one message; only EIO turns segmentation off")
        #expect(try Self.receiveAll(receiver, expected: 6).map(\.bytes) == expected)
    }

    @Test("a receiver with UDP GRO gets a segmented message in one read and splits it back", .enabled(if: SocketOptions.supportsUDPGRO),
          arguments: [loopbackV4, loopbackV6])
    func groReadSplitsBack(address: SocketAddress) throws {
        let sender = try UDPSocket(bindingTo: address)
        let receiver = try UDPSocket(bindingTo: address, receiveBufferSize: 1 << 20)
        try SocketOptions.setUDPGRO(receiver, enabled: true)
        let queue = SendQueue(count: 32, capacity: 2048, segmentation: true)
        let pool = ReceivePool(count: 8, capacity: 65_535, headroom: 16, coalescing: true)
        defer {
            queue.deallocate()
            pool.deallocate()
            sender.close()
            receiver.close()
        }
        // 12 × 1000 B (the last 400 B) in one run, then a lone 77 B datagram.
        let expected = (0..<12).map { patternDatagram(index: $0, length: $0 == 11 ? 400 : 1000) } + [patternDatagram(index: 12, length: 77)]
        for d in expected { #expect(d.withUnsafeBytes { queue.enqueue($0, to: receiver.localAddress) }) }
        #expect(queue.flush(on: sender) == (sent: 13, dropped: 0))
        var reads: [(size: Int, count: Int)] = []
        var got: [[UInt8]] = []
        _ = try DatagramBatchTests.drain(pool, from: receiver, expected: 2) { i, pool in
            reads.append((pool.segmentSize(i), pool.payload(i).count))
            #expect(!pool.truncated(i))
            #expect(pool.source(i) == sender.localAddress)
            pool.forEachSegment(i) { got.append(Array($0)) }
        }
        #expect(got == expected)
        // Loopback hands the segmented message to a GRO socket whole: one read of 12 datagrams.
        try #require(reads.count == 2)
        #expect(reads[0].size == 1000 && reads[0].count == 11_400)
        #expect(reads[1].size == 77 && reads[1].count == 77)
    }

    @Test("a GRO pool reads plain datagrams as single segments")
    func groPoolReadsPlainDatagrams() throws {
        let sender = try UDPSocket(bindingTo: loopbackV4)
        let receiver = try UDPSocket(bindingTo: loopbackV4)
        let pool = ReceivePool(count: 4, capacity: 65_535, headroom: 0, coalescing: true)
        defer {
            pool.deallocate()
            sender.close()
            receiver.close()
        }
        let sent = [patternDatagram(index: 1, length: 10), patternDatagram(index: 2, length: 20)]
        for d in sent { try sender.sendOrFail(d, to: receiver.localAddress) }
        var got: [[UInt8]] = []
        _ = try DatagramBatchTests.drain(pool, from: receiver, expected: 2) { i, pool in
            #expect(pool.segmentSize(i) == pool.payload(i).count)
            pool.forEachSegment(i) { got.append(Array($0)) }
        }
        #expect(got == sent)
    }
}
