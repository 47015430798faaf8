import FZControl
import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What a daemon's control side hears from its session.
public enum SessionEvent<Incoming: PortalMessage>: Sendable {
    /// The WebSocket is open; `init` follows as the first message.
    case connected
    case message(Incoming)
    /// The connection ended (the session reconnects after a backoff).
    case disconnected(reason: String)
}

/// Why a session stopped for good: the portal refused who we are (a bad, revoked, expired or
/// wrongly scoped token, or a parameter it does not accept). Retrying cannot help.
public struct SessionRefused: Error, CustomStringConvertible, Sendable {
    public var status: Int
    public var message: String
    public var description: String { "the portal refused this connection (HTTP \(status)): \(message)" }
}

public struct SessionConfiguration: Sendable {
    /// WebSocket ping period; a ping not answered by the next one closes the connection.
    public var heartbeat: Duration = .seconds(15)
    public var backoff = Backoff()
    /// A connection that lasted this long starts the backoff from the beginning again.
    public var stableAfter: Duration = .seconds(10)
    public var maxMessageBytes = 1 << 20
    public init() {}
}

/// The WebSocket session a gateway, client or relay keeps with the portal (docs/protocol.md):
/// connects with its token, delivers typed messages, reconnects with jittered exponential
/// backoff after a close, an error, the portal's `reconnect` or a missed heartbeat, and stops
/// with `SessionRefused` when the portal answers 401/400 at the upgrade.
public final class PortalSession<Incoming: PortalMessage, Outgoing: ControlMessage>: Sendable {
    public let url: PortalURL
    let path: String
    let query: [(String, String)]
    let token: String
    let configuration: SessionConfiguration
    let logger: Logger
    private let outbox = Mutex<AsyncStream<String>.Continuation?>(nil)
    private let counters = Mutex<(connects: Int, undecodable: Int)>((0, 0))

    public init(
        url: PortalURL, path: String, query: [(String, String)], token: String, configuration: SessionConfiguration = SessionConfiguration(),
        logger: Logger
    ) {
        self.url = url
        self.path = path
        self.query = query
        self.token = token
        self.configuration = configuration
        self.logger = logger
    }

    /// Sends `message` on the open connection; false when there is none (the caller resends
    /// what matters after the next `init`).
    @discardableResult public func send(_ message: Outgoing) -> Bool {
        let text = ControlCodec.encode(message)
        return outbox.withLock { c in
            guard let c else { return false }
            if case .enqueued = c.yield(text) { return true }
            return false
        }
    }

    /// Connections made so far, and portal messages that could not be decoded (dropped).
    public var stats: (connects: Int, undecodable: Int) { counters.withLock { $0 } }

    /// Runs until cancelled (returns) or refused (throws `SessionRefused`).
    public func run(_ onEvent: @escaping @Sendable (SessionEvent<Incoming>) async -> Void) async throws {
        var backoff = configuration.backoff
        while !Task.isCancelled {
            let started = ContinuousClock.now
            let reason: String
            do {
                reason = try await connectOnce(onEvent)
            } catch let e as WebSocketClientError where e == .webSocketUpgradeFailed {
                if let refused = await whyRefused() { throw refused }
                reason = "upgrade failed"
            } catch {
                reason = "\(error)"
            }
            outbox.withLock { $0 = nil }
            if Task.isCancelled { return }
            if ContinuousClock.now - started >= configuration.stableAfter { backoff.reset() }
            await onEvent(.disconnected(reason: reason))
            let wait = backoff.next()
            logger.info("portal connection ended; reconnecting", metadata: ["reason": "\(reason)", "in_ms": "\(wait.milliseconds)"])
            do { try await Task.sleep(for: wait) } catch { return }
        }
    }

    /// One connection: returns why it ended.
    private func connectOnce(_ onEvent: @escaping @Sendable (SessionEvent<Incoming>) async -> Void) async throws -> String {
        var headers = HTTPFields()
        headers[.authorization] = "Bearer \(token)"
        let config = WebSocketClientConfiguration(
            maxFrameSize: configuration.maxMessageBytes, additionalHeaders: headers, autoPing: .enabled(timePeriod: configuration.heartbeat),
            validateUTF8: true)
        let ended = Mutex<String?>(nil)
        let close = try await WebSocketClient.connect(url: url.webSocket(path, query: query), configuration: config, logger: logger) {
            [self] inbound, outbound, _ in
            counters.withLock { $0.connects += 1 }
            let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(1024))
            outbox.withLock { $0 = continuation }
            await onEvent(.connected)
            let writer = Task {
                for await text in stream { try await outbound.writeTextMessage(text) }
            }
            defer {
                continuation.finish()
                writer.cancel()
            }
            for try await message in inbound.messages(maxSize: configuration.maxMessageBytes) {
                guard case .text(let text) = message else { continue }
                let decoded: Incoming
                do throws(ErrorMessage) { decoded = try ControlCodec.decode(Incoming.self, from: text, .ignoreUnknownFields) } catch {
                    counters.withLock { $0.undecodable += 1 }
                    logger.warning("undecodable portal message dropped", metadata: ["error": "\(error.code): \(error.message)"])
                    continue
                }
                if decoded.isReconnect {
                    ended.withLock { $0 = "the portal asked to reconnect" }
                    return
                }
                await onEvent(.message(decoded))
            }
        }
        if let reason = ended.withLock({ $0 }) { return reason }
        if let close { return "closed by the portal (\(close.closeCode))\(close.reason.map { ": \($0)" } ?? "")" }
        return "connection lost"
    }

    /// After a failed upgrade: asks the same endpoint over plain HTTP, which answers 401 (token)
    /// or 400 (a parameter) with the portal's JSON error. Anything else is transient.
    private func whyRefused() async -> SessionRefused? {
        guard let u = url.http(path, query: query) else { return nil }
        var request = URLRequest(url: u, timeoutInterval: 10)
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        guard let (data, response) = try? await URLSession.shared.data(for: request), let http = response as? HTTPURLResponse else {
            return nil
        }
        guard http.statusCode == 401 || http.statusCode == 403 || http.statusCode == 400 else { return nil }
        let body = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        var message = body?["message"] as? String ?? HTTPURLResponse.localizedString(forStatusCode: http.statusCode)
        if let field = body?["field"] as? String { message += " (field: \(field))" }
        return SessionRefused(status: http.statusCode, message: message)
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
