#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: the errno it set and the call's name, e.g. `bind: Address already in use (errno 98)`.
///
/// `call` may carry a detail in parentheses (`setsockopt(SO_REUSEPORT)`), so logs say which option failed.
public struct SystemError: Error, Hashable, Sendable, CustomStringConvertible {
    public var errno: Int32
    public var call: String

    public init(errno: Int32, call: String) {
        self.errno = errno
        self.call = call
    }

    /// The C library's message for `errno` ("Address already in use").
    public var message: String {
        // glibc's strerror returns a static string for every known errno (and a thread-local buffer
        // for unknown ones since 2.32), so this is safe from any thread.
        guard let text = strerror(errno) else { return "Unknown error" }
        return String(cString: text)
    }

    public var description: String { "\(call): \(message) (errno \(errno))" }
}

/// The outcome of a call on a non-blocking descriptor: EAGAIN is an expected value, not an error.
public enum IOResult<T> {
    case processed(T)
    case wouldBlock
}

extension IOResult: Sendable where T: Sendable {}
extension IOResult: Equatable where T: Equatable {}

/// Every system call made by FZLinux goes through here, once.
///
/// Policy (as swift-nio's `System.swift`): EINTR is retried; EBADF and EFAULT mean the caller handed us
/// a closed descriptor or a bad pointer, which is a bug in this process, so they trap; every other
/// errno is returned to the wrapper, which turns it into a value (`.wouldBlock`) or a `SystemError`.
enum Syscall {
    /// Runs `body` until it stops failing with EINTR. Returns its result and the errno (0 on success).
    ///
    /// A result `< 0` counts as failure; errno is read immediately after the call, before anything
    /// else can run on this thread.
    @inline(__always)
    static func run<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) -> (result: T, errno: Int32) {
        while true {
            let result = body()
            if result >= 0 { return (result, 0) }
            let code = Glibc.errno
            switch code {
            case EINTR:
                continue
            case EBADF, EFAULT:
                preconditionFailure("\(name) failed with errno \(code): a closed descriptor or bad pointer is a bug")
            default:
                return (result, code)
            }
        }
    }

    /// A call that must succeed or throw (bind, setsockopt, epoll_ctl...). EAGAIN throws too.
    @inline(__always)
    static func check<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) throws(SystemError) -> T {
        let (result, code) = run(name, body)
        if code != 0 { throw SystemError(errno: code, call: "\(name)") }
        return result
    }

    /// A call on a non-blocking descriptor: EAGAIN/EWOULDBLOCK becomes `.wouldBlock`.
    @inline(__always)
    static func nonBlocking<T: FixedWidthInteger>(
        _ name: StaticString, _ body: () -> T
    ) throws(SystemError) -> IOResult<T> {
        let (result, code) = run(name, body)
        switch code {
        case 0: return .processed(result)
        case EAGAIN, EWOULDBLOCK: return .wouldBlock
        default: throw SystemError(errno: code, call: "\(name)")
        }
    }

    /// close(2). Not retried on EINTR: Linux releases the descriptor before reporting it, so a retry
    /// could close a descriptor another thread just opened. Other errors (EIO) are ignored: the
    /// descriptor is gone either way. EBADF traps (double close).
    static func close(_ fd: Int32) {
        let rc = Glibc.close(fd)
        if rc < 0 {
            let code = Glibc.errno
            if code == EBADF { preconditionFailure("close(\(fd)) failed with EBADF: closed twice") }
        }
    }
}
