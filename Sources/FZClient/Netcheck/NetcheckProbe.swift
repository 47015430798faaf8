import FZCore
import STUN

/// The measuring half of `fz-client netcheck`, sans-IO: which STUN Binding requests to send to which
/// relay and when, and what the answers say (RTT samples and the reflexive address each relay saw).
///
/// Shape: `pollTransmit(now:into:)` until nil, `handleInput(_:from:now:)` for every datagram,
/// `handleTimeout(now:)` at `pollTimeout()`; stop when `isFinished`. Time is a parameter, so tests
/// run it on a manual clock.
///
/// Why a new transaction per attempt rather than RFC 8489 §6.2.1 retransmissions of one: an answer
/// then says which send it belongs to, so every RTT sample is unambiguous (Karn's problem), and a late
/// answer to an earlier attempt is still a correct sample. All attempts stay matchable until the end.
///
/// Per relay, probes go one at a time: the next leaves as soon as the previous is answered, or
/// `retransmitAfter` after it left when it was not (lost, or slower than that). A relay that never
/// answers costs one small request per `retransmitAfter` until `budget` runs out; the whole check
/// ends at `budget` whatever happens, so an unreachable relay is reported, never waited on.
public struct NetcheckProbe {
    public struct Configuration: Sendable, Equatable {
        /// RTT samples wanted per relay; the check ends early once every relay has them.
        public var samplesPerRelay: Int
        /// How long an unanswered probe waits before the next one goes out.
        public var retransmitAfter: Duration
        /// The whole check's time limit, from `init`.
        public var budget: Duration

        /// 5 samples; 250 ms before retransmitting (Firezone's and pion's initial STUN RTO is of that
        /// order, and a relay on another continent answers well within it); 1.5 s in all, which keeps
        /// the report within the 2 s a user waits for "is my network OK".
        public init(samplesPerRelay: Int = 5, retransmitAfter: Duration = .milliseconds(250),
                    budget: Duration = .milliseconds(1500)) {
            precondition(samplesPerRelay > 0, "netcheck needs at least one sample per relay")
            self.samplesPerRelay = samplesPerRelay
            self.retransmitAfter = retransmitAfter
            self.budget = budget
        }
    }

    /// What one relay said.
    public struct RelaySamples: Sendable, Equatable {
        public let address: SocketAddress
        /// One RTT per answered request, in arrival order.
        public internal(set) var rtts: [Duration] = []
        /// The reflexive address of every answer (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an
        /// RFC 3489 server), in arrival order.
        public internal(set) var mapped: [SocketAddress] = []
        /// Requests sent (first attempts and retransmissions alike).
        public internal(set) var sent = 0

        public init(address: SocketAddress) { self.address = address }
    }

    public let configuration: Configuration
    public private(set) var relays: [RelaySamples]
    /// Datagrams that were not an answer to one of our requests (garbage, strangers, duplicates).
    public private(set) var dropped = 0

    private let deadline: Timestamp
    /// Per relay: when its next request is due; nil once it has its samples.
    private var nextSend: [Timestamp?]
    private var pending: [TransactionID: (relay: Int, sentAt: Timestamp)] = [:]
    private var expired = false

    public init(relays: [SocketAddress], configuration: Configuration = .init(), now: Timestamp) {
        self.configuration = configuration
        self.relays = relays.map(RelaySamples.init(address:))
        self.deadline = now + configuration.budget
        self.nextSend = Array(repeating: now, count: relays.count)
    }

    /// True once every relay has its samples or the budget is spent.
    public var isFinished: Bool { expired || nextSend.allSatisfy { $0 == nil } }

    /// The next instant `handleTimeout` wants to run.
    public func pollTimeout() -> Timestamp {
        guard !isFinished else { return .distantFuture }
        return nextSend.reduce(deadline) { soonest, due in due.map { min(soonest, $0) } ?? soonest }
    }

    public mutating func handleTimeout(now: Timestamp) {
        if now >= deadline { expired = true }
    }

    /// The next request due at `now`, encoded into `buffer` (at least 28 bytes): where it goes and
    /// its length. Nil when nothing is due.
    public mutating func pollTransmit(now: Timestamp, into buffer: UnsafeMutableRawBufferPointer) -> (
        destination: SocketAddress, count: Int
    )? {
        handleTimeout(now: now)
        guard !expired else { return nil }
        for index in relays.indices {
            guard let due = nextSend[index], due <= now else { continue }
            let id = TransactionID.random()
            // A bare Binding request plus FINGERPRINT (RFC 8489 §7.1 recommends it where STUN shares a
            // port with other protocols, as it does on a relay). No credentials: Binding needs none.
            let request = Message(type: MessageType(method: .binding, messageClass: .request), transactionID: id)
            guard let count = request.encode(into: buffer, fingerprint: true) else {
                preconditionFailure("a Binding request needs 28 bytes; the buffer has \(buffer.count)")
            }
            pending[id] = (index, now)
            relays[index].sent += 1
            nextSend[index] = now + configuration.retransmitAfter
            return (relays[index].address, count)
        }
        return nil
    }

    /// A datagram that arrived on the probing socket. Anything but a Binding success response to one
    /// of our pending requests, from the relay it was sent to, is dropped and counted.
    public mutating func handleInput(_ bytes: UnsafeRawBufferPointer, from source: SocketAddress, now: Timestamp) {
        guard PacketKind.classify(bytes) == .stun, let message = try? Message.decode(bytes),
            message.type == MessageType(method: .binding, messageClass: .successResponse),
            let (index, sentAt) = pending[message.transactionID], relays[index].address == source,
            let mapped = message.xorMappedAddress ?? message.mappedAddress
        else {
            dropped += 1
            return
        }
        pending[message.transactionID] = nil
        guard relays[index].rtts.count < configuration.samplesPerRelay else { return }
        relays[index].rtts.append(now - sentAt)
        relays[index].mapped.append(mapped)
        // The next probe leaves at once: samples come back to back, so the check takes a few RTTs.
        nextSend[index] = relays[index].rtts.count < configuration.samplesPerRelay ? now : nil
    }
}
