import FZControl
import FZCore
import Foundation
import Hummingbird
import HummingbirdWebSocket

/// The request context of every portal route: JSON in snake_case both ways, and room for a
/// WebSocket upgrade (the control channel).
public struct PortalContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<Self>
    /// The peer's IP address as the portal sees it (policy `source_cidrs`).
    public let remoteIP: IPAddress?

    public init(source: Source) {
        coreContext = .init(source: source)
        webSocket = .init()
        remoteIP = source.channel.remoteAddress?.ipAddress.flatMap { IPAddress($0) }
    }

    public var requestDecoder: JSONDecoder { JSONCoding.decoder }
    public var responseEncoder: JSONEncoder { JSONCoding.encoder }
}

/// Any encodable value as a JSON response with a chosen status (`201 Created` for creations).
struct JSONResponse<Value: Encodable & Sendable>: ResponseGenerator {
    var status: HTTPResponse.Status = .ok
    var value: Value

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let data = try JSONCoding.encoder.encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
