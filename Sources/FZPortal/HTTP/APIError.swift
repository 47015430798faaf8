import FZControl
import Foundation
import Hummingbird
import NIOCore
import Portal

/// Every error the API returns, as `{"error": CODE, "message": TEXT, "field": NAME?}`.
struct APIError: HTTPResponseError, Equatable {
    var status: HTTPResponse.Status
    var code: String
    var message: String
    var field: String?

    static func invalid(field: String, _ message: String) -> APIError {
        APIError(status: .badRequest, code: "invalid", message: message, field: field)
    }
    static let unauthorized = APIError(status: .unauthorized, code: "unauthorized", message: "a valid admin token is required (Authorization: Bearer fz_…)")
    static func notFound(_ what: String) -> APIError { APIError(status: .notFound, code: "not_found", message: "no such \(what)") }
    static func conflict(field: String, _ message: String) -> APIError {
        APIError(status: .conflict, code: "conflict", message: message, field: field)
    }

    struct Body: Encodable {
        var error: String
        var message: String
        var field: String?
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let data = try JSONCoding.encoder.encode(Body(error: code, message: message, field: field))
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// Maps domain and storage errors to API errors; anything else stays a 500.
    static func from(_ error: any Error) -> any Error {
        switch error {
        case let e as ValidationError: return invalid(field: e.field, e.reason)
        case let e as StoreError:
            switch e {
            case .unknownReference(let field): return invalid(field: field, "refers to nothing")
            case .conflict(let field, let reason): return conflict(field: field, reason)
            case .addressPoolExhausted, .unsupportedURL: return error
            }
        case let e as DecodingError: return decoding(e)
        case let e as HTTPError:
            // The framework's own refusals (no such route, body too large, wrong method) get the
            // same JSON shape as ours.
            let code: String = switch e.status {
                case .notFound: "not_found"
                case .contentTooLarge: "too_large"
                case .methodNotAllowed: "method_not_allowed"
                case .unauthorized: "unauthorized"
                default: e.status.code < 500 ? "invalid" : "internal"
            }
            return APIError(status: e.status, code: code, message: e.body ?? e.status.reasonPhrase.lowercased())
        case is NIOTooManyBytesError:
            return APIError(status: .contentTooLarge, code: "too_large", message: "the body is larger than the limit")
        default: return error
        }
    }

    /// A JSON body that does not decode: name the field (in snake_case, as the client wrote it).
    static func decoding(_ e: DecodingError) -> APIError {
        invalid(field: e.fieldPath ?? "body", e.reason)
    }
}

/// Turns thrown domain/storage/decoding errors into API errors for every route behind it.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do { return try await next(request, context) } catch { throw APIError.from(error) }
    }
}
