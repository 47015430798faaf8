import FZControl
import FZCore
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOWebSocket
import Portal

/// The control channel's WebSocket endpoints (docs/protocol.md):
/// `/api/v1/ws/gateway` (site token), `/api/v1/ws/client` (client token), `/api/v1/ws/relay`
/// (relay token). The token and parameters are checked before the upgrade: a missing, wrong,
/// revoked or mis-scoped token is a 401, a bad parameter a 400, and no WebSocket is opened.
struct ControlChannel: Sendable {
    let authenticator: TokenAuthenticator
    let broker: Broker
    let config: ControlConfiguration

    func register(on router: Router<PortalContext>) {
        router.ws("api/v1/ws/gateway", shouldUpgrade: { req, _ in try await upgrade(.gateway, req) }) { inbound, outbound, ctx in
            try await serve(.gateway, inbound, outbound, ctx)
        }
        router.ws("api/v1/ws/client", shouldUpgrade: { req, _ in try await upgrade(.client, req) }) { inbound, outbound, ctx in
            try await serve(.client, inbound, outbound, ctx)
        }
        router.ws("api/v1/ws/relay", shouldUpgrade: { req, _ in try await upgrade(.relay, req) }) { inbound, outbound, ctx in
            try await serve(.relay, inbound, outbound, ctx)
        }
    }

    private func upgrade(_ role: PeerRole, _ request: Request) async throws -> RouterShouldUpgrade {
        let (identity, token) = try await identify(role, request)
        switch await broker.refusal(identity, token: token.id) {
        case nil: break
        case .alreadyConnected?:
            broker.metrics.refused("conflict")
            throw APIError.conflict(field: "public_key", "a peer with this public key is connected now (one connection per key)")
        case let e?:
            broker.metrics.refused("limit")
            throw APIError(status: .tooManyRequests, code: "too_many_registrations", message: e.description, field: "public_key")
        }
        return .upgrade([:])
    }

    /// Who is connecting: the token must be valid and of the endpoint's scope; the query
    /// parameters must be well formed. Reads only; registration happens after the upgrade.
    func identify(_ role: PeerRole, _ request: Request) async throws -> (identity: PeerIdentity, token: Token) {
        guard let token = try await authenticator.token(from: request.headers) else { throw APIError.peerUnauthorized }
        return (try identity(role, request, token), token)
    }

    private func identity(_ role: PeerRole, _ request: Request, _ token: Token) throws -> PeerIdentity {
        let q = request.uri.queryParameters
        func param(_ name: String) -> String? { q[Substring(name)].map(String.init) }
        do {
            switch role {
            case .gateway:
                guard token.scope == .site, let site = token.subject else { throw APIError.peerUnauthorized }
                let key = try WireGuardKey(base64: param("public_key") ?? "")
                let name = try Names.validate(param("name") ?? "gateway-\(key.base64.prefix(8))")
                return .gateway(site: SiteID(site), name: name, publicKey: key)
            case .client:
                guard token.scope == .client, let actor = token.subject else { throw APIError.peerUnauthorized }
                let key = try WireGuardKey(base64: param("public_key") ?? "")
                let name = try Names.validate(param("name") ?? "client-\(key.base64.prefix(8))")
                return .client(actor: ActorID(actor), name: name, publicKey: key, sessionExpiresAt: token.expiresAt)
            case .relay:
                guard token.scope == .relay else { throw APIError.peerUnauthorized }
                let name = try Names.validate(param("name") ?? "")
                let region = try Names.validate(param("region") ?? "", field: "region")
                let addresses = (param("addresses") ?? "").split(separator: ",").map(String.init)
                guard (1...16).contains(addresses.count), addresses.allSatisfy(Self.isHostPort) else {
                    throw ValidationError(field: "addresses", reason: "1-16 comma-separated HOST:PORT")
                }
                return .relay(name: name, region: region, addresses: addresses)
            }
        } catch let e as ValidationError {
            throw APIError.invalid(field: e.field, e.reason)
        }
    }

    /// `198.51.100.7:3478` or `[2001:db8::1]:3478`.
    static func isHostPort(_ s: String) -> Bool {
        guard let colon = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: colon)...]), port > 0 else { return false }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
            return IPv6Address(host) != nil
        }
        return IPv4Address(host) != nil
    }

    /// One connection: register, send `init`, read messages until the peer leaves or breaks
    /// the protocol (an `error` message, then a close), then go offline.
    private func serve(
        _ role: PeerRole, _ inbound: WebSocketInboundStream, _ outbound: WebSocketOutboundWriter,
        _ ctx: WebSocketRouterContext<PortalContext>
    ) async throws {
        let logger = ctx.logger
        guard let (identity, token) = try? await identify(role, ctx.request) else {
            try await outbound.close(.policyViolation, reason: "unauthorized")
            return
        }
        let source = ctx.requestContext.remoteIP
        let (stream, outbox) = AsyncStream<Outgoing>.makeStream()
        let peer: Broker.PeerID
        do {
            peer = try await broker.connect(identity, source: source, token: token.id, tokenExpiresAt: token.expiresAt, outbox: outbox)
        } catch let e as Broker.BrokerError {
            // Lost a race with another connection after the upgrade check.
            let code = if case .alreadyConnected = e { "conflict" } else { "too_many_registrations" }
            broker.metrics.refused(code == "conflict" ? "conflict" : "limit")
            try? await outbound.write(.text(ControlCodec.encode(ToClient.error(ErrorMessage(code: code, message: e.description)))))
            try await outbound.close(.policyViolation, reason: code)
            return
        } catch {
            logger.warning("control channel registration failed", metadata: ["error": "\(error)"])
            broker.metrics.refused("failed")
            let failed = ErrorMessage(code: ErrorMessage.registrationFailed, message: "\(error)")
            try? await outbound.write(.text(ControlCodec.encode(ToClient.error(failed))))
            try await outbound.close(.unexpectedServerError, reason: "registration failed")
            return
        }
        let broker = self.broker
        let writer = Task {
            loop: for await entry in stream {
                switch entry {
                case .text(let text):
                    do { try await outbound.writeTextMessage(text) } catch { break loop }
                case .close(let reason):  // e.g. the token was revoked: close now
                    try? await outbound.close(.policyViolation, reason: reason)
                    break loop
                }
            }
            // Shutdown: the outbox ended after `reconnect`; close so the read loop ends too.
            if broker.isDraining { try? await outbound.close(.goingAway, reason: "portal shutting down") }
        }
        var closing: (code: WebSocketErrorCode, reason: String)?
        func violation(_ v: ErrorMessage, _ code: WebSocketErrorCode) {
            outbox.yield(.text(ControlCodec.encode(ToClient.error(v))))  // the same JSON for every kind of peer
            closing = (code, v.code)
        }
        var failure: (any Error)?
        do {
            loop: for try await message in inbound.messages(maxSize: config.maxMessageBytes * 2) {
                switch message {
                case .binary:
                    violation(ErrorMessage(code: ErrorMessage.unsupported, message: "only text messages are accepted"), .unacceptableData)
                    break loop
                case .text(let text):
                    guard text.utf8.count <= config.maxMessageBytes else {
                        violation(ErrorMessage(code: ErrorMessage.tooLarge, message: "messages are limited to \(config.maxMessageBytes) bytes"), .messageTooLarge)
                        break loop
                    }
                    switch InboundDecoder.decode(text, role: role) {
                    case .success(let m): await broker.handle(peer, m)
                    case .failure(let v):
                        violation(v, .policyViolation)
                        break loop
                    }
                }
            }
        } catch {
            failure = error
        }
        await broker.disconnect(peer)  // ends the outbox: the writer flushes what is queued, then stops
        await writer.value
        if let closing, !broker.isDraining { try? await outbound.close(closing.code, reason: closing.reason) }
        if let failure { throw failure }
    }
}

extension APIError {
    static let peerUnauthorized = APIError(
        status: .unauthorized, code: "unauthorized", message: "a valid token of this endpoint's scope is required (Authorization: Bearer fz_…)")
}
