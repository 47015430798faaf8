import FZControl
import Foundation

/// Where the portal is: `FZ_PORTAL_URL` / `--portal-url`, `http(s)://` or `ws(s)://` with a host.
public struct PortalURL: Sendable, Hashable, CustomStringConvertible {
    /// `ws` or `wss`.
    public let scheme: String
    public let host: String
    public let port: Int?
    /// A path prefix the portal is served under (usually empty).
    public let pathPrefix: String

    /// Parses `text`; a refusal names `flag` (the flag or variable the user set).
    public init(_ text: String, flag: String = "--portal-url") throws(ValidationError) {
        guard let c = URLComponents(string: text.trimmingCharacters(in: .whitespaces)), let s = c.scheme?.lowercased(),
            let host = c.host, !host.isEmpty
        else { throw ValidationError(field: flag, reason: "must be an http(s):// or ws(s):// URL with a host, got '\(text)'") }
        switch s {
        case "http", "ws": scheme = "ws"
        case "https", "wss": scheme = "wss"
        default: throw ValidationError(field: flag, reason: "must be an http(s):// or ws(s):// URL, got scheme '\(s)'")
        }
        guard c.query == nil, c.fragment == nil, c.user == nil else {
            throw ValidationError(field: flag, reason: "must not carry a query, fragment or user: '\(text)'")
        }
        self.host = host
        port = c.port
        var path = c.path
        while path.hasSuffix("/") { path.removeLast() }
        pathPrefix = path
    }

    public var description: String { "\(scheme)://\(authority)\(pathPrefix)" }

    var authority: String {
        let h = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return port.map { "\(h):\($0)" } ?? h
    }

    /// The WebSocket URL of `path` (e.g. `/api/v1/ws/gateway`) with `query` percent-encoded.
    public func webSocket(_ path: String, query: [(String, String)]) -> String {
        "\(scheme)://\(authority)\(pathPrefix)\(path)\(Self.encode(query))"
    }

    /// The same endpoint over plain HTTP(S), to learn why an upgrade failed (status and body).
    func http(_ path: String, query: [(String, String)]) -> URL? {
        URL(string: "\(scheme == "wss" ? "https" : "http")://\(authority)\(pathPrefix)\(path)\(Self.encode(query))")
    }

    static func encode(_ query: [(String, String)]) -> String {
        guard !query.isEmpty else { return "" }
        // Unreserved characters only: base64's `+`, `/` and `=` must be escaped (docs/protocol.md).
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return "?" + query.map { k, v in "\(k)=\(v.addingPercentEncoding(withAllowedCharacters: allowed) ?? v)" }.joined(separator: "&")
    }
}

/// Where a daemon's portal token comes from, in this order: `--token-file`, then `FZ_TOKEN`,
/// then systemd's `$CREDENTIALS_DIRECTORY/<credential>` (`LoadCredential=`).
public enum PortalToken {
    public static func resolve(
        tokenFile: String?, environment: [String: String] = ProcessInfo.processInfo.environment, credential: String = "fz-token"
    ) throws(ValidationError) -> String {
        if let path = tokenFile { return try read(path, field: "--token-file") }
        if let t = environment["FZ_TOKEN"] {
            let token = t.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw ValidationError(field: "FZ_TOKEN", reason: "is set but empty") }
            return token
        }
        if let dir = environment["CREDENTIALS_DIRECTORY"], FileManager.default.fileExists(atPath: "\(dir)/\(credential)") {
            return try read("\(dir)/\(credential)", field: "credential \(credential)")
        }
        throw ValidationError(field: "--token-file", reason: "no portal token: set FZ_TOKEN, pass --token-file, or LoadCredential=\(credential)")
    }

    static func read(_ path: String, field: String) throws(ValidationError) -> String {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ValidationError(field: field, reason: "cannot read \(path): \((error as NSError).localizedDescription)")
        }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw ValidationError(field: field, reason: "\(path) is empty") }
        guard !token.contains(where: { $0.isWhitespace }) else { throw ValidationError(field: field, reason: "\(path) holds more than one token") }
        return token
    }
}

/// Jittered exponential backoff: the n-th wait is drawn from [d/2, d] with d = initial·2ⁿ,
/// capped. A fleet that lost its portal at the same moment does not come back in lockstep.
public struct Backoff: Sendable {
    public var initial: Duration
    public var cap: Duration
    private var attempt = 0

    public init(initial: Duration = .milliseconds(250), cap: Duration = .seconds(30)) {
        self.initial = initial
        self.cap = cap
    }

    /// The next wait; `unit` in [0, 1] is the jitter draw (random by default).
    public mutating func next(unit: Double = Double.random(in: 0...1)) -> Duration {
        let exponent = min(attempt, 30)
        attempt += 1
        let full = min(initial * Double(1 << exponent), cap)
        return full * (0.5 + 0.5 * min(max(unit, 0), 1))
    }

    /// After a connection that worked: start from `initial` again.
    public mutating func reset() { attempt = 0 }
}
