/// TURN REST API credentials (draft-uberti-behave-turn-rest-00 §2.2), the scheme coturn, eturnal,
/// fz-relay and the fz portal share: username `<unix expiry>:<name>`, password
/// `base64(HMAC-SHA1(secret, username))`. The portal mints them and relays check them with the
/// same shared secret, so both must compute exactly this function; it lives here once.
public enum TURNRESTCredentials {
    /// The password a REST user presents for `username`.
    public static func password(secret: String, username: String) -> String {
        Base64.encode(HMACSHA1.mac(key: Array(secret.utf8), Array(username.utf8)))
    }

    /// `<expiry>:<name>` (the draft's `timestamp:username`).
    public static func username(expiry unixSeconds: Int64, name: String) -> String { "\(unixSeconds):\(name)" }

    /// The unix expiry a REST username starts with (`1700000000:alice` → 1700000000; a bare number
    /// is an expiry without a name, as coturn accepts); nil when there is none.
    public static func expiry(of username: String) -> UInt64? {
        guard let colon = username.firstIndex(of: ":") else { return UInt64(username) }
        return UInt64(username[..<colon])
    }

    /// A username and password valid until `unixSeconds`.
    public static func mint(secret: String, name: String, expiry unixSeconds: Int64) -> (username: String, password: String) {
        let u = username(expiry: unixSeconds, name: name)
        return (u, password(secret: secret, username: u))
    }
}
