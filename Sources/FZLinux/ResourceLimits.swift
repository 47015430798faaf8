#if canImport(Glibc)
    import Glibc
#endif

/// Process resource limits.
public enum ResourceLimits {
    /// Raises the soft open-descriptor limit to the hard limit (a daemon holding many sockets,
    /// a benchmark opening one per allocation). Returns the soft limit in effect afterwards.
    @discardableResult
    public static func raiseOpenFilesToHardLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return UInt64(limit.rlim_cur)
    }
}
