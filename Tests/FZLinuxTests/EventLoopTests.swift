#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import FZCore
import FZLinux
import Testing

@Suite("EventLoop")
struct EventLoopTests {
    @Test("a registered UDP socket's handler runs on the loop thread when a datagram arrives")
    func socketHandlerFires() throws {
        let loop = try EventLoop()
        let receiver = try UDPSocket(bindingTo: loopbackV4)
        let sender = try UDPSocket(bindingTo: loopbackV4)
        let pool = ReceivePool(count: 8)
        let received = Locked<[[UInt8]]>([])
        let onLoopThread = Locked(true)
        try loop.register(fd: receiver.fd) { events in
            #expect(events.contains(.readable))
            if !loop.inEventLoop { onLoopThread.update { $0 = false } }
            let n = (try? pool.receive(from: receiver)) ?? 0
            for i in 0..<n {
                let bytes = Array(pool.payload(i))
                received.update { $0.append(bytes) }
            }
        }
        let thread = try loop.start(name: "fz-test-loop")
        #expect(!loop.inEventLoop)

        try sender.sendOrFail([1, 2, 3], to: receiver.localAddress)
        try sender.sendOrFail([4, 5], to: receiver.localAddress)
        #expect(waitUntil { received.value.count == 2 })
        loop.stop()
        thread.join()

        #expect(received.value == [[1, 2, 3], [4, 5]])
        #expect(onLoopThread.value)
        pool.deallocate()
        receiver.close()
        sender.close()
    }

    @Test("deadlines fire in order, each once it has passed")
    func deadlinesFireInOrder() throws {
        let loop = try EventLoop()
        // Loop-confined timer state: set up here before start, then touched only by the loop thread.
        final class Timers {
            var pending: [(id: Int, at: Timestamp)] = []
        }
        let timers = Timers()
        let start = MonotonicClock.now()
        timers.pending = [
            (1, start + .milliseconds(20)),
            (2, start + .milliseconds(40)),
            (3, start + .milliseconds(60)),
        ]
        let fired = Locked<[Int]>([])
        let early = Locked(false)
        loop.deadlineProvider = { timers.pending.first?.at ?? .distantFuture }
        loop.timeoutHandler = { now in
            while let first = timers.pending.first, first.at <= now {
                timers.pending.removeFirst()
                fired.update { $0.append(first.id) }
            }
            // Whatever remains is in the future: firing must never be early.
            if let first = timers.pending.first, first.at <= now { early.update { $0 = true } }
        }
        let thread = try loop.start(name: "fz-test-timers")
        #expect(waitUntil { fired.value.count == 3 })
        loop.stop()
        thread.join()
        #expect(fired.value == [1, 2, 3])
        #expect(!early.value)
    }

    @Test("a deadline that is already due fires on the first iteration")
    func dueDeadlineFiresImmediately() throws {
        let loop = try EventLoop()
        let fired = Locked(0)
        final class Deadline { var at: Timestamp = .zero }
        let deadline = Deadline()
        loop.deadlineProvider = { deadline.at }
        loop.timeoutHandler = { _ in
            deadline.at = .distantFuture
            fired.update { $0 += 1 }
        }
        let thread = try loop.start(name: "fz-test-due")
        #expect(waitUntil { fired.value == 1 })
        loop.stop()
        thread.join()
        #expect(fired.value == 1)
    }

    @Test("work handed over with execute from other threads runs on the loop thread, in order per thread")
    func executeRunsOnTheLoopThread() throws {
        let loop = try EventLoop()
        let thread = try loop.start(name: "fz-test-exec")
        let perThread = Locked<[Int: [Int]]>([:])
        let offLoop = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for k in 0..<100 {
                loop.execute {
                    if !loop.inEventLoop { offLoop.update { $0 += 1 } }
                    perThread.update { $0[worker, default: []].append(k) }
                }
            }
        }
        #expect(waitUntil { perThread.value.values.reduce(0) { $0 + $1.count } == 400 })
        loop.stop()
        thread.join()
        #expect(offLoop.value == 0)
        for worker in 0..<4 {
            #expect(perThread.value[worker] == Array(0..<100))
        }
    }

    @Test("stop from another thread ends run on the calling thread")
    func stopFromAnotherThreadEndsRun() throws {
        let loop = try EventLoop()
        let running = Locked(false)
        loop.execute { running.update { $0 = true } }
        DispatchQueue.global().async {
            // Stop once the loop has proved it runs, or after the bound regardless, so run() returns.
            waitUntil { running.value }
            loop.stop()
        }
        loop.run()  // returns only because of the stop() above
        #expect(running.value)
    }

    @Test("stop before run makes run return at once, and work queued before stop still runs")
    func stopBeforeRun() throws {
        let loop = try EventLoop()
        let ran = Locked(false)
        loop.execute { ran.update { $0 = true } }
        loop.stop()
        loop.run()
        #expect(ran.value)
    }

    @Test("after unregister the handler is not called again")
    func unregisterStopsCallbacks() throws {
        let loop = try EventLoop()
        let receiver = try UDPSocket(bindingTo: loopbackV4)
        let sender = try UDPSocket(bindingTo: loopbackV4)
        let pool = ReceivePool(count: 8)
        let calls = Locked(0)
        try loop.register(fd: receiver.fd) { _ in
            calls.update { $0 += 1 }
            _ = try? pool.receive(from: receiver)
        }
        let thread = try loop.start(name: "fz-test-unreg")
        try sender.sendOrFail([1], to: receiver.localAddress)
        #expect(waitUntil { calls.value == 1 })

        let unregistered = Locked(false)
        loop.execute { [fd = receiver.fd] in
            loop.unregister(fd: fd)
            unregistered.update { $0 = true }
        }
        #expect(waitUntil { unregistered.value })
        try sender.sendOrFail([2], to: receiver.localAddress)
        // A few more iterations, in which a still-registered socket would have been reported.
        for _ in 0..<3 {
            let done = Locked(false)
            loop.execute { done.update { $0 = true } }
            #expect(waitUntil { done.value })
        }
        loop.stop()
        thread.join()

        #expect(calls.value == 1)
        // The second datagram was never read by the handler: it is still queued.
        var buffer = [UInt8](repeating: 0, count: 16)
        let result = try buffer.withUnsafeMutableBytes { try receiver.receive(into: $0) }
        guard case .processed(let r) = result else {
            Issue.record("the second datagram should still be queued")
            return
        }
        #expect(r.count == 1 && buffer[0] == 2)
        pool.deallocate()
        receiver.close()
        sender.close()
    }

    @Test("an echo server flushes its send queue after each iteration")
    func echoThroughAfterIterationFlush() throws {
        let loop = try EventLoop()
        let server = try UDPSocket(bindingTo: loopbackV6)
        let client = try UDPSocket(bindingTo: loopbackV6)
        let pool = ReceivePool(count: 16)
        let queue = SendQueue(count: 16)
        let iterations = Locked(0)
        try loop.register(fd: server.fd) { _ in
            let n = (try? pool.receive(from: server)) ?? 0
            for i in 0..<n {
                let payload = UnsafeRawBufferPointer(pool.payload(i))
                if !queue.enqueue(payload, to: pool.source(i)) {
                    queue.flush(on: server)
                    _ = queue.enqueue(payload, to: pool.source(i))
                }
            }
        }
        loop.afterIterationHandler = {
            iterations.update { $0 += 1 }
            queue.flush(on: server)
        }
        let thread = try loop.start(name: "fz-test-echo")

        let clientPool = ReceivePool(count: 16)
        for k in 0..<20 { try client.sendOrFail(patternDatagram(index: k, length: 40 + k), to: server.localAddress) }
        var echoed: [[UInt8]] = []
        _ = try DatagramBatchTests.drain(clientPool, from: client, expected: 20) { i, pool in
            echoed.append(Array(pool.payload(i)))
            #expect(pool.source(i) == server.localAddress)
        }
        loop.stop()
        thread.join()

        #expect(echoed == (0..<20).map { patternDatagram(index: $0, length: 40 + $0) })
        #expect(iterations.value > 0)
        pool.deallocate()
        queue.deallocate()
        clientPool.deallocate()
        server.close()
        client.close()
    }

    @Test("registering a descriptor twice throws EEXIST, modifying an unknown one ENOENT")
    func registrationErrors() throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(bindingTo: loopbackV4)
        defer { socket.close() }
        try loop.register(fd: socket.fd) { _ in }
        do {
            try loop.register(fd: socket.fd) { _ in }
            Issue.record("second registration succeeded")
        } catch {
            #expect(error.errno == EEXIST)
            #expect(error.call == "epoll_ctl(ADD)")
        }
        try loop.modify(fd: socket.fd, readable: true, writable: true)
        loop.unregister(fd: socket.fd)
        do {
            try loop.modify(fd: socket.fd, readable: true, writable: false)
            Issue.record("modify of an unregistered descriptor succeeded")
        } catch {
            #expect(error.errno == ENOENT)
        }
    }

    @Test("writable interest reports a UDP socket writable")
    func writableInterest() throws {
        let loop = try EventLoop()
        let socket = try UDPSocket(bindingTo: loopbackV4)
        let writable = Locked(false)
        try loop.register(fd: socket.fd, readable: false, writable: true) { events in
            if events.contains(.writable) {
                writable.update { $0 = true }
                try? loop.modify(fd: socket.fd, readable: true, writable: false)
            }
        }
        let thread = try loop.start(name: "fz-test-write")
        #expect(waitUntil { writable.value })
        loop.stop()
        thread.join()
        socket.close()
    }
}
