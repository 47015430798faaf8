import Hummingbird
import HummingbirdCore
import HTTPTypes
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// What an unauthenticated socket may cost the portal before it is closed.
///
/// Hummingbird's own idle timer for an upgradable HTTP/1 connection starts only once a request
/// head has been parsed, so without these a socket that sends nothing, a request head sent a
/// byte at a time or one that never ends would be held forever, and enough of them exhaust the
/// file descriptors (`/healthz` stops answering).
public struct HTTPLimits: Sendable, Equatable {
    /// From accept to the end of the first request head.
    public var headerTimeout: Duration
    /// An HTTP keep-alive connection with no request in flight (WebSockets have their own
    /// heartbeat, `ControlConfiguration.heartbeat`).
    public var idleTimeout: Duration
    /// Open connections from one source address; more are closed as they are accepted.
    public var maxConnectionsPerSource: Int
    /// All request header lines together.
    public var maxHeaderBytes: Int

    public init(
        headerTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(60), maxConnectionsPerSource: Int = 256,
        maxHeaderBytes: Int = 16 * 1024
    ) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.maxConnectionsPerSource = maxConnectionsPerSource
        self.maxHeaderBytes = maxHeaderBytes
    }
}

/// Open connections per source address, shared by every event loop.
final class ConnectionCounter: Sendable {
    let limit: Int
    private let counts = Mutex<[String: Int]>([:])
    private let refused = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    /// Counts the connection in, or returns false when its source is at the limit.
    func admit(_ source: String) -> Bool {
        let admitted = counts.withLock { counts -> Bool in
            let n = counts[source, default: 0]
            guard n < limit else { return false }
            counts[source] = n + 1
            return true
        }
        if !admitted { refused.add(1, ordering: .relaxed) }
        return admitted
    }

    func release(_ source: String) {
        counts.withLock { counts in
            let n = counts[source, default: 0]
            counts[source] = n > 1 ? n - 1 : nil
        }
    }

    func open(from source: String) -> Int { counts.withLock { $0[source, default: 0] } }
    var refusedTotal: Int { refused.load(ordering: .relaxed) }
}

/// The portal's HTTP/1 + WebSocket child channel with `HTTPLimits` applied before any request
/// is parsed: connections over the per-source limit are closed at accept; a connection whose
/// first request head is not complete within `headerTimeout`, or whose head is malformed or too
/// large, is closed.
struct GuardedChannel: ServerChildChannel {
    typealias Value = HTTP1WebSocketUpgradeChannel.Value
    let inner: HTTP1WebSocketUpgradeChannel
    let counter: ConnectionCounter
    let headerTimeout: TimeAmount
    let preflight: UpgradePreflight.Check

    struct Refused: Error {}

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let source = channel.remoteAddress?.ipAddress ?? "unknown"
        guard counter.admit(source) else {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(Refused())
        }
        let counter = self.counter
        channel.closeFuture.whenComplete { _ in counter.release(source) }
        let timeout = headerTimeout
        let preflight = self.preflight
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let ops = channel.pipeline.syncOperations
            let decoder = try ops.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            let deadline = FirstHeadDeadline(timeout: timeout)
            try ops.addHandler(deadline, position: .after(decoder))
            try ops.addHandler(UpgradePreflight(check: preflight, logger: logger), position: .after(deadline))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }

    static func builder(router: Router<PortalContext>, configuration: HTTP1WebSocketUpgradeChannel.Configuration, limits: HTTPLimits)
        -> HTTPServerBuilder
    {
        let webSocketResponder = router.buildResponder()
        let counter = ConnectionCounter(limit: limits.maxConnectionsPerSource)
        let timeout = TimeAmount(limits.headerTimeout)
        // Would the router upgrade this request? Asked before the WebSocket upgrader sees it,
        // so that a refusal is answered by the router as plain HTTP (401/400/409 with the JSON
        // error) instead of the upgrader's bare 400.
        let check: UpgradePreflight.Check = { head, channel, logger in
            var fields = HTTPFields()
            for (name, value) in head.headers { if let n = HTTPField.Name(name) { fields.append(HTTPField(name: n, value: value)) } }
            let request = Request(
                head: HTTPRequest(method: .get, scheme: "http", authority: nil, path: head.uri, headerFields: fields),
                body: RequestBody(buffer: ByteBuffer()))
            let context = PortalContext(source: .init(channel: channel, logger: logger))
            do { return try await webSocketResponder.respond(to: request, context: context).status == .ok } catch { return false }
        }
        return HTTPServerBuilder { responder in
            GuardedChannel(
                inner: HTTP1WebSocketUpgradeChannel(
                    responder: responder, webSocketResponder: webSocketResponder, configuration: configuration),
                counter: counter, headerTimeout: timeout, preflight: check)
        }
    }
}

/// Sits right after the request decoder until the first request head has passed: closes the
/// connection when that takes longer than `timeout` or the decoder fails (a malformed or
/// oversized head), then removes itself (after a WebSocket upgrade no HTTP parts flow here).
final class FirstHeadDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let isHead: Bool
        if case .head = unwrapInboundIn(data) { isHead = true } else { isHead = false }
        context.fireChannelRead(data)
        if isHead {
            deadline?.cancel()
            deadline = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Holds a WebSocket upgrade request (`Upgrade:` on `/api/v1/ws/…`) until the router said it
/// would upgrade it. When not, the upgrade headers are taken off and the request goes on as plain
/// HTTP: the router answers it like any other request, with the status and JSON error of the
/// refusal (docs/protocol.md), and no WebSocket is opened. Removes itself after the first request.
final class UpgradePreflight: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias Check = @Sendable (HTTPRequestHead, any Channel, Logger) async -> Bool

    let check: Check
    let logger: Logger
    private var held: [HTTPServerRequestPart] = []
    private var checking = false

    init(check: @escaping Check, logger: Logger) {
        self.check = check
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if checking {
            held.append(part)
            return
        }
        guard case .head(let head) = part, head.uri.hasPrefix("/api/v1/ws/"), head.headers.contains(name: "upgrade") else {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        checking = true
        held = [part]
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let channel = context.channel
        let check = self.check
        let logger = self.logger
        Task {
            let upgrade = await check(head, channel, logger)
            channel.eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.release(context: context, upgrade: upgrade)
            }
        }
    }

    private func release(context: ChannelHandlerContext, upgrade: Bool) {
        var parts = held
        held = []
        if !upgrade, case .head(var head) = parts.first {
            head.headers.remove(name: "upgrade")
            head.headers.remove(name: "connection")
            head.headers.remove(name: "sec-websocket-key")
            head.headers.replaceOrAdd(name: "connection", value: "close")
            parts[0] = .head(head)
        }
        for p in parts { context.fireChannelRead(wrapInboundOut(p)) }
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
