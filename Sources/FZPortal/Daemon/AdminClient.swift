import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Where the admin subcommands send their requests, and with which token.
struct PortalConnection: ParsableArguments {
    @Option(help: "Portal base URL (default: $FZ_PORTAL_URL or http://127.0.0.1:8080).")
    var portalUrl: String?

    @Option(help: "Admin token (default: $FZ_PORTAL_TOKEN).")
    var token: String?

    init() {}

    func client() throws -> AdminClient {
        let env = ProcessInfo.processInfo.environment
        let base = portalUrl ?? env["FZ_PORTAL_URL"] ?? "http://127.0.0.1:8080"
        guard let url = URL(string: base), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
            throw ValidationError("--portal-url must be an http(s) URL, got \(base)")
        }
        guard let token = token ?? env["FZ_PORTAL_TOKEN"], !token.isEmpty else {
            throw ValidationError("an admin token is required: --token or FZ_PORTAL_TOKEN")
        }
        return AdminClient(base: url, token: token)
    }
}

/// A minimal client of the admin REST API (docs/api.md), over Foundation's URLSession.
struct AdminClient: Sendable {
    let base: URL
    let token: String

    /// Sends the request; answers the decoded JSON body of a 2xx answer (nil for 204). A non-2xx
    /// answer prints the server's message on stderr and exits 1.
    func call(_ method: String, _ path: String, body: [String: Any]? = nil) async throws -> Any? {
        var req = URLRequest(url: base.appendingPathComponent("api/v1").appendingPathComponent(path))
        req.httpMethod = method
        req.timeoutInterval = 30
        req.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        req.setValue("application/json", forHTTPHeaderField: "Accept")
        if let body {
            req.httpBody = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
            req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (status, data) = try await Self.send(req, url: base)
        let json = data.isEmpty ? nil : try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        guard (200..<300).contains(status) else {
            var message = "HTTP \(status)"
            if let e = json as? [String: Any] {
                message += ": \(e["error"] as? String ?? "error"): \(e["message"] as? String ?? "")"
                if let f = e["field"] as? String { message += " (field: \(f))" }
            } else if !data.isEmpty {
                message += ": \(String(decoding: data.prefix(512), as: UTF8.self))"
            }
            FileHandle.standardError.write(Data("error: \(message)\n".utf8))
            throw ExitCode(1)
        }
        return json
    }

    private static func send(_ req: URLRequest, url: URL) async throws -> (Int, Data) {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<(Int, Data), any Error>) in
            let task = URLSession.shared.dataTask(with: req) { data, response, error in
                if let error {
                    FileHandle.standardError.write(Data("error: cannot reach the portal at \(url): \(error.localizedDescription)\n".utf8))
                    k.resume(throwing: ExitCode(1))
                } else {
                    k.resume(returning: ((response as? HTTPURLResponse)?.statusCode ?? 0, data ?? Data()))
                }
            }
            task.resume()
        }
    }

    /// Prints a JSON value (pretty, sorted keys) on stdout.
    static func printJSON(_ value: Any?) {
        guard let value else { return }
        if let data = try? JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed]) {
            print(String(decoding: data, as: UTF8.self))
        }
    }
}

/// `3600`, `90s`, `30m`, `12h`, `7d` → seconds.
enum DurationText {
    static func seconds(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        var digits = Substring(text)
        var unit = 1
        if let last = digits.last, let u = units[last] {
            unit = u
            digits = digits.dropLast()
        }
        guard let n = Int(digits), n > 0, n <= Int(Int32.max) / unit else { return nil }
        return n * unit
    }
}
