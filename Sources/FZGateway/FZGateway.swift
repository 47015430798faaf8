import WireGuard
