import CIDN

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SASLprep (RFC 4013), the stringprep profile RFC 5389 used for passwords. It stands in for
/// the PRECIS OpaqueString profile (RFC 8265) that RFC 8489 names: both map non-ASCII spaces to
/// U+0020, drop "commonly mapped to nothing" characters and apply NFKC, which is what real
/// credentials exercise (RFC 5769 §2.4 and RFC 8489 Appendix B.1 give the same result for both).
public enum SASLprep {
    /// The prepared string, or nil when it contains a prohibited character (controls, private
    /// use, non-characters...) or fails the bidirectional rule. Unassigned code points are
    /// allowed (libidn flags 0, the "query" mode of RFC 3454 §7).
    public static func prepare(_ s: String) -> String? {
        // NUL is prohibited anyway, and would silently end the C string.
        guard !s.utf8.contains(0) else { return nil }
        var out: UnsafeMutablePointer<CChar>?
        let rc = stringprep_profile(s, &out, "SASLprep", Stringprep_profile_flags(rawValue: 0))
        defer { free(out) }
        guard rc == 0, let out else { return nil }
        return String(validatingCString: out)
    }
}
