import FZPortal

// Thin: parse the command line, hand over to FZPortal.
await PortalMain.run()
