/// The protocol's constants (whitepaper §6.1, table "Constants"), named as there.
public enum Constants {
    /// Start a new handshake after this many messages on one session (2^60).
    public static let rekeyAfterMessages: UInt64 = 1 << 60
    /// Never send or accept a counter at or above this (2^64 − 2^13 − 1).
    public static let rejectAfterMessages: UInt64 = UInt64.max - (1 << 13)
    /// The initiator starts a new handshake when sending on a session this old.
    public static let rekeyAfterTime: Duration = .seconds(120)
    /// No session is used for sending or receiving once this old.
    public static let rejectAfterTime: Duration = .seconds(180)
    /// Retry a handshake for this long before giving up.
    public static let rekeyAttemptTime: Duration = .seconds(90)
    /// Resend an unanswered initiation after this (plus jitter), and send at most one initiation
    /// per this interval.
    public static let rekeyTimeout: Duration = .seconds(5)
    /// Upper bound (exclusive) of the random jitter added to REKEY_TIMEOUT (§6.4: up to 333 ms).
    public static let rekeyTimeoutJitterLimit: Duration = .milliseconds(334)
    /// Send a keepalive when data arrived but nothing was sent for this long.
    public static let keepaliveTimeout: Duration = .seconds(10)
    /// At most one initiation per peer is consumed per this interval (50 a second), as
    /// wireguard-go and the kernel do against floods of replayed-but-newer initiations.
    public static let handshakeInitiationRate: Duration = .milliseconds(20)
    /// Sessions and handshake state are erased after 3 × REJECT_AFTER_TIME without a new handshake.
    public static let zeroKeysAfter: Duration = .seconds(540)
}

/// The two message-count limits of §6.1, separate so tests can shrink them.
public struct Limits: Sendable, Equatable {
    public var rekeyAfterMessages: UInt64
    public var rejectAfterMessages: UInt64

    public init(rekeyAfterMessages: UInt64 = Constants.rekeyAfterMessages,
                rejectAfterMessages: UInt64 = Constants.rejectAfterMessages) {
        self.rekeyAfterMessages = rekeyAfterMessages
        self.rejectAfterMessages = rejectAfterMessages
    }

    public static let standard = Limits()
}
