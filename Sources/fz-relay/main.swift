import FZRelay

#if canImport(Glibc)
import Glibc
#endif

// Thin: read the environment, hand over to FZRelay.
var environment: [String: String] = [:]
var envp = environ
while let entry = envp.pointee {
    let s = String(cString: entry)
    if let eq = s.firstIndex(of: "=") { environment[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
    envp += 1
}
await RelayMain.run(arguments: Array(CommandLine.arguments.dropFirst()), environment: environment)
