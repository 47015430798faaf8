import FZGateway

// Thin: parse the command line, hand over to FZGateway.
GatewayMain.run()
