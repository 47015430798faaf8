import FZClient

// Thin: hand the arguments over to FZClient.
ClientMain.run(arguments: Array(CommandLine.arguments.dropFirst()))
