#if canImport(Glibc)
import FZControl
import Glibc
#endif
import Hummingbird
import Portal

/// Resolves `Authorization: Bearer fz_…` to a valid stored token: parse strictly, hash, look up
/// by hash, check revocation and expiry at `now`.
struct TokenAuthenticator: Sendable {
    let store: any PortalStore
    let clock: WallClock

    func token(from headers: HTTPFields) async throws -> Token? {
        guard let value = headers[.authorization], value.hasPrefix("Bearer "),
              let secret = TokenSecret(presented: String(value.dropFirst("Bearer ".count)))
        else { return nil }
        guard let token = try await store.token(hash: secret.hash), token.isValid(at: clock.now()) else { return nil }
        return token
    }
}

/// Admits only requests carrying a valid admin token.
struct AdminAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let authenticator: TokenAuthenticator

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let t = try await authenticator.token(from: request.headers), t.scope == .admin else { throw APIError.unauthorized }
        return try await next(request, context)
    }
}

/// The one place the portal reads the wall clock; tests substitute a fixed or manual time.
public struct WallClock: Sendable {
    public let now: @Sendable () -> UnixTime

    public init(now: @escaping @Sendable () -> UnixTime) { self.now = now }

    public static let system = WallClock {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UnixTime(seconds: Int64(ts.tv_sec))
    }
}
