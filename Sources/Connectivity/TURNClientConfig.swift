import FZCore
import FZCrypto

/// Long-term credentials for a relay (RFC 8489 §9.2): a static user, or a TURN REST pair minted
/// from a shared secret (what the portal hands out).
public struct TURNCredentials: Sendable, Equatable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// TURN REST credentials (`expiry:name`, base64 HMAC-SHA1), the one function portal and relay
    /// share (`TURNRESTCredentials`).
    public static func rest(secret: String, name: String, expiry unixSeconds: Int64) -> TURNCredentials {
        let (u, p) = TURNRESTCredentials.mint(secret: secret, name: name, expiry: unixSeconds)
        return TURNCredentials(username: u, password: p)
    }
}

/// When a request is sent again and when it is given up (RFC 8489 §6.2.1).
///
/// The default is the RFC's: the first retransmission after `initialRTO` (500 ms), each next wait
/// doubled, `transmissions` (Rc = 7) sends in all, then `lastWaitMultiplier` × RTO (Rm = 16) for the
/// last answer: sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s and a timeout at 39.5 s. A client that
/// must notice a dead relay faster passes a shorter schedule (the ICE agent will).
public struct RetransmissionSchedule: Sendable, Equatable {
    public var initialRTO: Duration
    public var transmissions: Int
    public var lastWaitMultiplier: Int

    public init(initialRTO: Duration = .milliseconds(500), transmissions: Int = 7, lastWaitMultiplier: Int = 16) {
        precondition(transmissions >= 1, "at least one transmission")
        self.initialRTO = initialRTO
        self.transmissions = transmissions
        self.lastWaitMultiplier = lastWaitMultiplier
    }

    public static let rfc8489 = RetransmissionSchedule()

    /// The wait after the `n`-th transmission (1-based).
    func wait(after n: Int) -> Duration {
        n >= transmissions ? initialRTO * lastWaitMultiplier : initialRTO * (1 << min(n - 1, 30))
    }

    /// From the first transmission to giving up.
    public var timeout: Duration {
        (1...transmissions).reduce(Duration.zero) { $0 + wait(after: $1) }
    }
}

/// Everything that shapes a `TURNClient`. Defaults follow RFC 8656.
public struct TURNClientConfig: Sendable {
    /// The relay's transport address; every transmit goes there and only datagrams from there count.
    public var server: SocketAddress
    public var credentials: TURNCredentials
    /// LIFETIME asked for in Allocate and Refresh; nil leaves it to the server (RFC 8656 §7.2: 10 min).
    public var requestedLifetime: Duration?
    public var retransmission: RetransmissionSchedule = .rfc8489
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §7.1): without it the server relays over IPv4, so an
    /// IPv6 peer needs `.v6` here.
    public var requestedAddressFamily: AddressFamily?
    /// Use SHA-256 long-term keys and MESSAGE-INTEGRITY-SHA256 when the server offers them
    /// (RFC 8489 §9.2.4); MD5 and MESSAGE-INTEGRITY otherwise.
    public var allowSHA256 = true
    /// FINGERPRINT on every request (RFC 8489 §14.7): cheap, and it keeps STUN apart from other
    /// traffic on a socket shared with ICE and WireGuard.
    public var fingerprint = true
    public var software: String?
    /// Refresh an allocation, permission or channel when this fraction of its lifetime has passed:
    /// 0.8 leaves 120 s of a 10-minute allocation or channel and 60 s of a 5-minute permission,
    /// more than the 39.5 s the default schedule takes to give up on a request.
    public var refreshFraction: Double = 0.8
    /// RFC 8656 §9: permissions last 300 s (the server's, not negotiable).
    public var permissionLifetime: Duration = .seconds(300)
    /// RFC 8656 §12: channel bindings last 600 s.
    public var channelLifetime: Duration = .seconds(600)
    /// Channel numbers the client binds: RFC 8656 §12's 0x4000-0x4FFF (first byte 0x40-0x4F, so the
    /// socket can also carry DTLS or RTP per RFC 7983).
    public var channelRange: ClosedRange<UInt16> = 0x4000...0x4FFF
    /// 438 answers taken per request before giving up (a server whose nonces never stay valid).
    public var maxStaleNonceRetries = 3

    public init(server: SocketAddress, credentials: TURNCredentials, requestedLifetime: Duration? = nil) {
        self.server = server
        self.credentials = credentials
        self.requestedLifetime = requestedLifetime
    }

    func refreshDelay(_ lifetime: Duration) -> Duration {
        .nanoseconds(Int64(Double(lifetime.nanosecondsClamped) * refreshFraction))
    }
}
