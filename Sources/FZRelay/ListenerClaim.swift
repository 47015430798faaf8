import FZCore
import FZLinux

#if canImport(Glibc)
import Glibc
#endif

/// A second relay on an address and port another process already serves (issue 16, item 4).
struct AddressInUse: Error, CustomStringConvertible {
    var address: SocketAddress
    var transport: String
    var underlying: SystemError

    var description: String {
        "address in use: \(address) (\(transport)) is already served by another process; "
            + "one relay per address and port (\(underlying.call): \(underlying.message))"
    }
}

/// One relay per listening address and port.
///
/// The shards of one relay share their listening port through SO_REUSEPORT, and SO_REUSEPORT
/// would just as well let a second relay process of the same user join the group: the kernel
/// would then silently split clients between the two. So before the shards bind, every listening
/// address is probed with a socket bound *without* SO_REUSEPORT, which fails with EADDRINUSE while
/// any other socket (reuseport or not, on that address or on a wildcard covering it) holds the
/// port, and the relay refuses to start.
///
/// A probe alone leaves a window: two relays starting at once could both probe, both close their
/// probes and both bind with SO_REUSEPORT. The window is closed by a start-up lock per port in the
/// abstract Unix socket namespace (`AbstractLock`), held from the first probe until every shard
/// socket is bound: after that, any later relay's probe fails. The lock is held for milliseconds,
/// so relays on other addresses with the same port only wait; it needs no file (no disk state to
/// go stale, nothing to clean up after a crash, the kernel drops it with the process) and is
/// scoped to the network namespace, as the ports are. The alternatives: a reuseport BPF program
/// (SO_ATTACH_REUSEPORT_CBPF) steers among the group's sockets but cannot keep another process
/// out of the group; a lock file per address needs a writable directory shared by every relay
/// and still no check against a non-fz-relay server on the port.
///
/// Relayed sockets (the `--min-port`…`--max-port` range) never use SO_REUSEPORT and are not
/// affected: a port another process holds is skipped by the allocator.
enum ListenerClaim {
    /// How long a start waits for another relay's start-up on the same port.
    static let lockTimeout: Duration = .seconds(5)

    static func lockName(port: UInt16) -> String { "fz-relay/listen/\(port)" }

    /// Runs `bind` (which binds every shard's listening sockets) while holding the port's
    /// start-up lock, after probing each listening address; throws `AddressInUse` when another
    /// process serves one of them.
    static func exclusively<T>(udp: [SocketAddress], tcp: [SocketAddress], _ bind: () throws -> T) throws -> T {
        var locks: [AbstractLock] = []
        defer { for l in locks { l.release() } }
        for port in Set((udp + tcp).map(\.port)).sorted() {
            do {
                locks.append(try AbstractLock.acquire(name: lockName(port: port), timeout: lockTimeout))
            } catch {
                throw SystemError(errno: error.errno, call: "\(error.call): another fz-relay kept starting on port \(port)")
            }
        }
        for address in udp {
            do {
                try UDPSocket(bindingTo: address).close()
            } catch where error.errno == EADDRINUSE {
                throw AddressInUse(address: address, transport: "UDP", underlying: error)
            } catch {
                throw SystemError(errno: error.errno, call: "\(error.call) \(address)")
            }
        }
        for address in tcp {
            do {
                // Bound, not listening: fails while anyone listens there (SO_REUSEADDR only
                // tolerates TIME_WAIT leftovers of an earlier run).
                try TCPListener(bindingTo: address, listen: false).close()
            } catch where error.errno == EADDRINUSE {
                throw AddressInUse(address: address, transport: "TCP", underlying: error)
            } catch {
                throw SystemError(errno: error.errno, call: "\(error.call) \(address) (TCP)")
            }
        }
        return try bind()
    }
}
