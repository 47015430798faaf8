#if canImport(Glibc)
import Glibc
#endif
import FZCore
import FZLinux
import Testing

@Suite("UDPSocket")
struct UDPSocketTests {
    @Test("binding 127.0.0.1 port 0 reports the port the kernel chose")
    func bindsIPv4Loopback() throws {
        let socket = try UDPSocket(bindingTo: loopbackV4)
        defer { socket.close() }
        #expect(socket.localAddress.ip == .v4(.loopback))
        #expect(socket.localAddress.port != 0)
        #expect(socket.fd >= 0)
    }

    @Test("binding [::1] port 0 reports the port the kernel chose")
    func bindsIPv6Loopback() throws {
        let socket = try UDPSocket(bindingTo: loopbackV6)
        defer { socket.close() }
        #expect(socket.localAddress.ip == .v6(.loopback))
        #expect(socket.localAddress.port != 0)
    }

    @Test("IPv6 sockets are IPv6-only")
    func ipv6SocketsSetV6Only() throws {
        let socket = try UDPSocket(bindingTo: loopbackV6)
        defer { socket.close() }
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        let rc = getsockopt(socket.fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &value, &length)
        #expect(rc == 0)
        #expect(value == 1)
    }

    @Test("sockets are non-blocking and close-on-exec")
    func socketsAreNonBlockingAndCloseOnExec() throws {
        let socket = try UDPSocket(bindingTo: loopbackV4)
        defer { socket.close() }
        #expect(fcntl(socket.fd, F_GETFL) & O_NONBLOCK != 0)
        #expect(fcntl(socket.fd, F_GETFD) & FD_CLOEXEC != 0)
        var buffer = [UInt8](repeating: 0, count: 16)
        let result = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
        guard case .wouldBlock = result else {
            Issue.record("an empty socket should report wouldBlock")
            return
        }
    }

    @Test("binding an address in use throws a SystemError naming bind and EADDRINUSE")
    func bindingAnAddressInUseThrows() throws {
        let first = try UDPSocket(bindingTo: loopbackV4)
        defer { first.close() }
        do {
            let second = try UDPSocket(bindingTo: first.localAddress)
            second.close()
            Issue.record("second bind to \(first.localAddress) succeeded")
        } catch {
            #expect(error.call == "bind")
            #expect(error.errno == EADDRINUSE)
            #expect(error.description.hasPrefix("bind: "))
            #expect(error.description.hasSuffix("(errno \(EADDRINUSE))"))
        }
    }

    @Test("SO_REUSEPORT lets two sockets bind the same port", arguments: [loopbackV4, loopbackV6])
    func reusePortSharesAPort(address: SocketAddress) throws {
        let first = try UDPSocket(bindingTo: address, reusePort: true)
        defer { first.close() }
        let second = try UDPSocket(bindingTo: first.localAddress, reusePort: true)
        defer { second.close() }
        #expect(second.localAddress == first.localAddress)
    }

    @Test("requested buffer sizes are applied")
    func bufferSizesAreApplied() throws {
        let socket = try UDPSocket(bindingTo: loopbackV4, receiveBufferSize: 100_000, sendBufferSize: 100_000)
        defer { socket.close() }
        // The kernel doubles the value for its bookkeeping.
        #expect(try socket.receiveBufferSize() >= 100_000)
        #expect(try socket.sendBufferSize() >= 100_000)
    }

    @Test("one datagram goes through sendto and recvfrom with its source", arguments: [loopbackV4, loopbackV6])
    func singleDatagramRoundTrip(address: SocketAddress) throws {
        let sender = try UDPSocket(bindingTo: address)
        let receiver = try UDPSocket(bindingTo: address)
        defer {
            sender.close()
            receiver.close()
        }
        let datagram = patternDatagram(index: 7, length: 100)
        try sender.sendOrFail(datagram, to: receiver.localAddress)
        var buffer = [UInt8](repeating: 0, count: 2048)
        var got: (count: Int, source: SocketAddress)?
        waitUntil {
            let result = try? buffer.withUnsafeMutableBytes { try receiver.receive(into: $0) }
            if case .processed(let r) = result { got = r }
            return got != nil
        }
        let received = try #require(got)
        #expect(received.count == datagram.count)
        #expect(Array(buffer[0..<received.count]) == datagram)
        #expect(received.source == sender.localAddress)
    }

    @Test("close is idempotent")
    func closeIsIdempotent() throws {
        let socket = try UDPSocket(bindingTo: loopbackV4)
        socket.close()
        socket.close()
        #expect(!socket.isOpen)
    }
}

@Suite("Clocks")
struct ClockTests {
    @Test("the monotonic clock never goes backwards")
    func monotonicClockIsMonotonic() {
        var previous = MonotonicClock.now()
        for _ in 0..<1000 {
            let now = MonotonicClock.now()
            #expect(now >= previous)
            previous = now
        }
    }

    @Test("the wall clock reads a plausible unix time")
    func wallClockIsUnixTime() {
        // 2023-11-14; any machine running this is later.
        #expect(RealtimeClock.unixSeconds() > 1_700_000_000)
    }
}

@Suite("SocketOptions")
struct SocketOptionsTests {
    @Test("GSO and GRO probes answer, and a supported option can be set")
    func offloadProbes() throws {
        let socket = try UDPSocket(bindingTo: loopbackV4)
        defer { socket.close() }
        if SocketOptions.supportsUDPSegment {
            try SocketOptions.setUDPSegment(socket, size: 1200)
            try SocketOptions.setUDPSegment(socket, size: 0)
        }
        if SocketOptions.supportsUDPGRO {
            try SocketOptions.setUDPGRO(socket, enabled: true)
            try SocketOptions.setUDPGRO(socket, enabled: false)
        }
    }

    @Test("Don't Fragment is set on IPv4 and IPv6 sockets and oversized sends then fail instead of fragmenting")
    func dontFragment() throws {
        for address in [loopbackV4, loopbackV6] {
            let socket = try UDPSocket(bindingTo: address)
            defer { socket.close() }
            #expect(try SocketOptions.mtuDiscoveryMode(socket) != SocketOptions.dontFragmentMode)
            try SocketOptions.setDontFragment(socket)
            #expect(try SocketOptions.mtuDiscoveryMode(socket) == SocketOptions.dontFragmentMode)
        }
    }
}
