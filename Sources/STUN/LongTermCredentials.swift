import FZCrypto

/// Long-term credential helpers (RFC 8489 §9.2).
public enum LongTermCredentials {
    /// The HMAC key of RFC 8489 §9.2.2: MD5 (16 bytes) or, for `.sha256`, SHA-256 (32 bytes) of
    /// `username ":" realm ":" SASLprep(password)`. Username and realm are used as given, as in
    /// RFC 5389 (RFC 8489 also passes the realm through OpaqueString, a no-op for ASCII realms).
    /// A password SASLprep rejects is used unprepared. Algorithms other than SHA-256 get MD5, the
    /// RFC 8489 default, so callers reject unsupported PASSWORD-ALGORITHM values first (§9.2.4).
    public static func key(username: String, realm: String, password: String,
                           algorithm: PasswordAlgorithm = .md5) -> [UInt8] {
        let prepared = SASLprep.prepare(password) ?? password
        let input = Array("\(username):\(realm):\(prepared)".utf8)
        if algorithm.id == PasswordAlgorithm.sha256.id {
            return SHA256Digest.hash(input)
        }
        return MD5Digest.hash(input)

    }

    /// USERHASH (RFC 8489 §14.4): SHA-256 of `OpaqueString(username) ":" OpaqueString(realm)`,
    /// 32 bytes. SASLprep stands in for OpaqueString; strings it rejects are used as given.
    public static func userhash(username: String, realm: String) -> [UInt8] {
        let u = SASLprep.prepare(username) ?? username
        let r = SASLprep.prepare(realm) ?? realm
        return SHA256Digest.hash(Array("\(u):\(r)".utf8))
    }
}
