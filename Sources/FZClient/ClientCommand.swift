import ArgumentParser
import FZLinux

/// `fz-client`: the fz client. One binary: `run` (the daemon: portal session, connectivity
/// engine, TUN), `status` (what the running daemon does) and `netcheck`.
public struct ClientCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fz-client",
        abstract: "The fz client.",
        subcommands: [RunCommand.self, StatusCommand.self, NetcheckCommand.self])

    public init() {}
}

/// The entry point the executable calls. Usage errors (unknown flags, a malformed or missing
/// `--relay`) exit 2, as usage errors do in most Unix tools, not ArgumentParser's EX_USAGE (64);
/// a failure while running exits 1; `--help` exits 0.
public enum ClientMain {
    public static func run(arguments: [String]) -> Never {
        var command: any ParsableCommand
        do {
            command = try ClientCommand.parseAsRoot(arguments)
        } catch {
            if ClientCommand.exitCode(for: error) == .success { ClientCommand.exit(withError: error) }
            printError(ClientCommand.fullMessage(for: error))
            ClientCommand.exit(withError: ExitCode(2))
        }
        do {
            try command.run()
            ClientCommand.exit()
        } catch {
            // `--help` parses into ArgumentParser's help command, whose run() throws a clean exit.
            if ClientCommand.exitCode(for: error) == .success { ClientCommand.exit(withError: error) }
            printError("fz-client: \(ClientCommand.message(for: error))")
            ClientCommand.exit(withError: ExitCode(1))
        }
    }

    static func printError(_ text: String) {
        StandardError.write(text.hasSuffix("\n") ? text : text + "\n")
    }
}
