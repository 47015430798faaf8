import CFZLinux

/// What epoll reported for a descriptor. The raw values are the kernel's `EPOLL*` bits.
public struct EpollEvents: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// EPOLLIN: data (or an error to read) is waiting.
    public static let readable = EpollEvents(rawValue: CFZ_EPOLLIN)
    /// EPOLLOUT: the send buffer has room.
    public static let writable = EpollEvents(rawValue: CFZ_EPOLLOUT)
    /// EPOLLERR: always reported, whether asked for or not.
    public static let error = EpollEvents(rawValue: CFZ_EPOLLERR)
    /// EPOLLHUP: always reported, whether asked for or not.
    public static let hangup = EpollEvents(rawValue: CFZ_EPOLLHUP)

    public var description: String {
        var parts: [String] = []
        if contains(.readable) { parts.append("readable") }
        if contains(.writable) { parts.append("writable") }
        if contains(.error) { parts.append("error") }
        if contains(.hangup) { parts.append("hangup") }
        return "[" + parts.joined(separator: ", ") + "]"
    }
}
