import ArgumentParser

/// Turns `FZ_RELAY_*` environment variables into command-line arguments for options the
/// command line did not set, so flags and environment are parsed and validated by one parser
/// (and errors name the flag either way).
public enum EnvironmentDefaults {
    static let single = [
        "listening-port", "min-port", "max-port", "realm", "static-auth-secret-file", "user-quota", "total-quota",
        "max-permissions", "unauth-rate", "max-tcp-connections", "max-tcp-connections-per-ip", "threads", "metrics-listen", "config", "log-level", "log-format",
    ]
    static let repeatable = ["listening-ip", "relay-ip", "external-ip", "user", "static-auth-secret", "allow-peer", "deny-peer"]
    static let flags = ["allow-loopback-peers", "no-tcp"]

    /// `FZ_RELAY_LISTENING_PORT` for `listening-port`.
    public static func variable(for option: String) -> String {
        "FZ_RELAY_" + option.uppercased().replacingDashes
    }

    /// The arguments with environment values appended for every option absent from them.
    public static func merge(arguments: [String], environment: [String: String]) -> [String] {
        var out = arguments
        func given(_ option: String) -> Bool {
            arguments.contains { $0 == "--\(option)" || $0.hasPrefix("--\(option)=") }
        }
        for option in single where !given(option) {
            if let v = environment[variable(for: option)] { out += ["--\(option)", v] }
        }
        for option in repeatable where !given(option) {
            guard let v = environment[variable(for: option)] else { continue }
            for item in v.split(separator: ",") where !item.isEmpty { out += ["--\(option)", String(item)] }
        }
        for option in flags where !given(option) {
            if let v = environment[variable(for: option)], ["1", "true", "yes", "on"].contains(v.lowercased()) {
                out.append("--\(option)")
            }
        }
        return out
    }
}

extension String {
    var replacingDashes: String { String(map { $0 == "-" ? "_" : $0 }) }
}

/// The executable's entry point: environment defaults merged in, then parsed and run.
public enum RelayMain {
    public static func run(arguments: [String], environment: [String: String]) async {
        await RelayCommand.main(EnvironmentDefaults.merge(arguments: arguments, environment: environment))
    }
}
