import CFZLinux

#if canImport(Glibc)
import Glibc
#endif

/// Private network namespaces, for tests and the lab: a thread that calls
/// `enterNewNamespace()` is alone in a fresh namespace (only a loopback interface, down), and the
/// sockets, netlink sockets and TUN devices it opens from then on live there, whichever thread
/// uses them later. The namespace has no name and ends when the last descriptor in it closes.
public enum NetworkNamespace {
    /// Moves the calling thread (only it) into a new network namespace. Needs CAP_SYS_ADMIN.
    /// Call it on a thread of your own that ends afterwards: never on a shared pool thread.
    public static func enterNewNamespace() throws(SystemError) {
        guard cfz_unshare_network_namespace() == 0 else { throw SystemError(errno: errno, call: "unshare(CLONE_NEWNET)") }
    }
}
