import FZLinux
import Foundation
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// The client's state directory (`--state-dir`, `StateDirectory=fz-client`): its WireGuard key,
/// which makes it the same client to the portal across restarts (same id, same tunnel
/// addresses), and the status socket. Created 0700; the key is written 0600, atomically (a
/// temporary file, fsync, rename, fsync of the directory), so a crash never leaves half a key.
public struct StateDirectory: Sendable {
    public let path: String
    public static let keyFile = "private.key"
    public static let statusSocket = "status.sock"

    public init(_ path: String) { self.path = path }

    public var keyPath: String { "\(path)/\(Self.keyFile)" }
    public var statusSocketPath: String { "\(path)/\(Self.statusSocket)" }

    /// Creates the directory (0700, parents as needed) unless it exists; refuses one that is not a
    /// directory or that others may write to.
    public func prepare() throws(StateError) {
        var components: [String] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            components.append(String(part))
            let prefix = (path.hasPrefix("/") ? "/" : "") + components.joined(separator: "/")
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw StateError("cannot create \(prefix): \(String(cString: strerror(errno)))")
            }
        }
        var st = stat()
        guard stat(path, &st) == 0 else { throw StateError("cannot stat \(path): \(String(cString: strerror(errno)))") }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw StateError("\(path) is not a directory") }
        guard st.st_mode & 0o022 == 0 else { throw StateError("\(path) is writable by others (mode \(String(st.st_mode & 0o777, radix: 8))); use a private directory") }
    }

    /// The key kept in the directory, or a fresh one written there first.
    public func loadOrCreateKey() throws(StateError) -> PrivateKey {
        if let text = try read(keyPath) {
            guard let key = PrivateKey(base64: text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw StateError("\(keyPath) does not hold a base64 WireGuard private key; remove it to make a new one (the client gets a new identity)")
            }
            return key
        }
        let key = PrivateKey.generate()
        try writeAtomically(key.base64 + "\n", to: keyPath)
        return key
    }

    private func read(_ file: String) throws(StateError) -> String? {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw StateError("cannot read \(file): \(String(cString: strerror(errno)))")
        }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 256)
        let n = Glibc.read(fd, &bytes, bytes.count)
        guard n >= 0 else { throw StateError("cannot read \(file): \(String(cString: strerror(errno)))") }
        defer { bytes.withUnsafeMutableBytes { _ = memset($0.baseAddress!, 0, $0.count) } }
        return String(decoding: bytes[0..<n], as: UTF8.self)
    }

    private func writeAtomically(_ text: String, to file: String) throws(StateError) {
        let temporary = "\(file).tmp"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StateError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        Glibc.close(fd)
        guard written == bytes.count, synced, rename(temporary, file) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw StateError("cannot write \(file): \(reason)")
        }
        let dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            _ = fsync(dir)
            Glibc.close(dir)
        }
    }
}

public struct StateError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = "--state-dir: " + description }
}
