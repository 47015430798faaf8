import FZCore
import FZTestSupport
import STUN
import Testing

@testable import TURN

/// Records the relayed sockets the server asks for; `refuse` simulates ports held by others.
struct FakeSockets: RelaySocketProvider {
    var open: Set<SocketAddress> = []
    var refuse: Set<UInt16> = []
    var opened: [SocketAddress] = []
    var closed: [SocketAddress] = []
    var refuseAdmission = false
    var admitted: [FiveTuple] = []
    var ended: [FiveTuple] = []

    mutating func admitAllocation(_ tuple: FiveTuple, user: String, userQuota: Int, totalQuota: Int) -> Bool {
        guard !refuseAdmission else { return false }
        admitted.append(tuple)
        return true
    }

    mutating func allocationEnded(_ tuple: FiveTuple, user: String) { ended.append(tuple) }

    mutating func openRelay(at address: SocketAddress, dontFragment: Bool) -> Bool {
        if refuse.contains(address.port) { return false }
        precondition(!open.contains(address), "opened \(address) twice")
        open.insert(address)
        opened.append(address)
        return true
    }

    mutating func closeRelay(at address: SocketAddress) {
        open.remove(address)
        closed.append(address)
    }
}

let listener = SocketAddress("198.51.100.1:3478")!
let relayV4 = IPAddress("198.51.100.1")!
let relayV6 = IPAddress("2001:db8::1")!
let alice = SocketAddress("203.0.113.5:40000")!
let publicPeer = SocketAddress("8.8.8.8:5000")!
let publicPeer6 = SocketAddress("[2606:4700::1111]:5000")!
let realm = "fz.test"

/// A server on a manual clock plus a scripted client that authenticates like a real one.
struct Harness {
    var clock = ManualClock()
    var server: TURNServer<FakeSockets>
    var cachedNonces: [SocketAddress: String] = [:]

    init(config: (inout ServerConfig) -> Void = { _ in }, policy: PeerPolicy = PeerPolicy(),
         users: [String: String] = ["alice": "secret", "bob": "hunter2"], secrets: [String] = ["rest-secret"],
         dualStack: Bool = true) {
        var c = ServerConfig(
            realm: realm,
            relayAddresses: dualStack ? [RelayAddress(bind: relayV4), RelayAddress(bind: relayV6)] : [RelayAddress(bind: relayV4)])
        config(&c)
        server = TURNServer(
            config: c, credentials: CredentialStore(realm: realm, users: users, secrets: secrets),
            peerPolicy: policy, sockets: FakeSockets())
        server.unixSecondsAtZero = 1_800_000_000
    }

    var now: Timestamp { clock.now }

    mutating func send(_ bytes: [UInt8], from: SocketAddress = alice) -> ClientAction {
        bytes.withUnsafeBytes { server.handleClient($0, from: from, listener: listener, now: clock.now) }
    }

    mutating func request(_ method: STUN.Method, _ attrs: [Attribute] = [], from: SocketAddress = alice) -> Message? {
        let m = Message(type: MessageType(method: method, messageClass: .request), transactionID: .random(), attributes: attrs)
        return reply(send(m.encode(), from: from))
    }

    /// Gets a nonce with an unauthenticated request, as every client does first.
    mutating func nonce(from: SocketAddress = alice) -> String {
        let r = request(.allocate, [.requestedTransport(17)], from: from)!
        return r.nonce!
    }

    /// An authenticated request (MD5 key, MESSAGE-INTEGRITY) with a fresh nonce.
    mutating func authed(_ method: STUN.Method, _ attrs: [Attribute] = [], user: String = "alice",
                         password: String = "secret", from: SocketAddress = alice,
                         transactionID: TransactionID = .random(), nonce: String? = nil,
                         algorithm: IntegrityAlgorithm = .sha1, fingerprint: Bool = false) -> Message? {
        let n: String
        if let given = nonce {
            n = given
        } else if let cached = cachedNonces[from] {
            n = cached
        } else {
            n = self.nonce(from: from)
            cachedNonces[from] = n
        }
        let m = Message(
            type: MessageType(method: method, messageClass: .request), transactionID: transactionID,
            attributes: attrs + [.username(user), .realm(realm), .nonce(n)])
        let key = LongTermCredentials.key(username: user, realm: realm, password: password)
        let r = reply(send(m.encode(integrity: MessageIntegrity(key: key, algorithm: algorithm), fingerprint: fingerprint), from: from))
        // Like a real client: a stale cached nonce is replaced by the one in the 438 and the request retried.
        if nonce == nil, r?.code == 438, let fresh = r?.nonce {
            cachedNonces[from] = fresh
            return authed(method, attrs, user: user, password: password, from: from, transactionID: .random(),
                          nonce: fresh, algorithm: algorithm, fingerprint: fingerprint)
        }
        return r
    }

    mutating func allocate(_ attrs: [Attribute] = [.requestedTransport(17)], user: String = "alice",
                           password: String = "secret", from: SocketAddress = alice) -> Message? {
        authed(.allocate, attrs, user: user, password: password, from: from)
    }

    func reply(_ action: ClientAction) -> Message? {
        guard case .reply(let bytes) = action else { return nil }
        return try? Message.decode(bytes)
    }

    mutating func advance(seconds: Double) {
        clock.advance(seconds: seconds)
        if server.nextDeadline <= clock.now { server.handleTimeout(now: clock.now) }
    }

    mutating func fromPeer(_ payload: [UInt8], peer: SocketAddress, relayed: SocketAddress) -> PeerAction {
        payload.withUnsafeBytes { server.handlePeer($0, from: peer, relayed: relayed, now: clock.now) }
    }
}

func channelData(_ n: UInt16, _ payload: [UInt8]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 4 + payload.count)
    out.withUnsafeMutableBytes { ChannelData.writeHeader(channel: n, length: payload.count, to: $0.baseAddress!) }
    out.replaceSubrange(4..., with: payload)
    return out
}

func sendIndication(to peer: SocketAddress, _ data: [UInt8]) -> [UInt8] {
    Message(type: MessageType(method: .send, messageClass: .indication), transactionID: .random(),
            attributes: [.xorPeerAddress(peer), .data(data)]).encode()
}

extension Message {
    var isSuccess: Bool { type.messageClass == .successResponse }
    var code: Int? { errorCode?.code }
}
