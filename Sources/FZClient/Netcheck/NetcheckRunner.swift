import FZCore
import FZLinux

/// The I/O shell around `NetcheckProbe`: one UDP socket per address family the relays need (so every
/// relay of a family sees the same local socket, which is what makes the mapping comparison mean
/// something), an `EventLoop` run on the calling thread, the clock read here and nowhere else.
public enum NetcheckRunner {
    /// Probes `relays` and returns the report. Throws only when a socket cannot be opened; a relay
    /// that cannot be reached (no route, no answer) is part of the report.
    public static func run(relays: [SocketAddress], configuration: NetcheckProbe.Configuration = .init())
        throws(SystemError) -> NetcheckReport
    {
        var sockets: [AddressFamily: UDPSocket] = [:]
        for family in [AddressFamily.v4, .v6] where relays.contains(where: { $0.family == family }) {
            let wildcard = family == .v4 ? IPAddress.v4(.any) : IPAddress.v6(IPv6Address(high: 0, low: 0))
            sockets[family] = try UDPSocket(bindingTo: SocketAddress(ip: wildcard, port: 0))
        }
        defer { for s in sockets.values { s.close() } }

        let loop = try EventLoop()
        let state = LoopState(probe: NetcheckProbe(relays: relays, configuration: configuration, now: MonotonicClock.now()))
        defer { state.deallocate() }

        for socket in sockets.values {
            try loop.register(fd: socket.fd) { _ in
                state.drain(socket, now: MonotonicClock.now())
                if state.probe.isFinished { loop.stop() }
            }
        }
        loop.deadlineProvider = { state.probe.pollTimeout() }
        loop.timeoutHandler = { now in
            // Sending what is due moves the deadline forward, as the loop requires.
            state.probe.handleTimeout(now: now)
            state.flush(sockets, now: now)
            if state.probe.isFinished { loop.stop() }
        }
        loop.afterIterationHandler = { state.flush(sockets, now: MonotonicClock.now()) }
        state.flush(sockets, now: MonotonicClock.now())
        loop.run()
        for socket in sockets.values { loop.unregister(fd: socket.fd) }

        var ports: [AddressFamily: UInt16] = [:]
        for (family, socket) in sockets { ports[family] = socket.localAddress.port }
        // Without the host's addresses every NAT verdict would be a guess; with an empty list a
        // translated host still classifies correctly and an untranslated one reads as independent.
        let local = (try? LocalAddresses.all()) ?? []
        return NetcheckReport(samples: state.probe.relays, localAddresses: local, localPorts: ports)
    }

    /// What the loop's closures share: the probe and one datagram buffer, allocated once.
    private final class LoopState {
        var probe: NetcheckProbe
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 8)

        init(probe: NetcheckProbe) { self.probe = probe }

        func deallocate() { buffer.deallocate() }

        /// Reads until the socket is empty. A receive error (an ICMP error queued on the socket) ends
        /// this round; epoll reports what is still waiting. The relay concerned stays unanswered.
        func drain(_ socket: UDPSocket, now: Timestamp) {
            while true {
                guard let result = try? socket.receive(into: buffer) else { return }
                guard case .processed(let (count, source)) = result else { return }
                probe.handleInput(UnsafeRawBufferPointer(rebasing: buffer[..<count]), from: source, now: now)
            }
        }

        /// Sends every request due. A send that fails (no route to that family, say) counts as a
        /// lost request, which is what it is to the relay.
        func flush(_ sockets: [AddressFamily: UDPSocket], now: Timestamp) {
            while let (destination, count) = probe.pollTransmit(now: now, into: buffer) {
                guard let socket = sockets[destination.family] else { continue }
                _ = try? socket.send(UnsafeRawBufferPointer(rebasing: buffer[..<count]), to: destination)
            }
        }
    }
}
