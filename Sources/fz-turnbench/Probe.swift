/// The bytes at the start of every benchmark payload, as the peer sees them (the peer echoes
/// them unchanged). Stored in host byte order: only this process writes and reads them.
///
/// | offset | size | field |
/// | --- | --- | --- |
/// | 0 | 4 | magic `Probe.magic` |
/// | 4 | 4 | step id (echoes of an earlier step are counted as stale, not received) |
/// | 8 | 8 | sequence number within the step |
/// | 16 | 8 | send time, CLOCK_MONOTONIC nanoseconds |
/// | 24 | 4 | allocation index |
///
/// The rest of the payload (up to `--size`) is zero filler sent from a shared buffer.
enum Probe {
    static let size = 28
    static let magic: UInt32 = 0x4254_5A46

    @inline(__always)
    static func write(to p: UnsafeMutableRawPointer, step: UInt32, sequence: UInt64, sentAt: UInt64, allocation: UInt32) {
        p.storeBytes(of: magic, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: step, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: sequence, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: sentAt, toByteOffset: 16, as: UInt64.self)
        p.storeBytes(of: allocation, toByteOffset: 24, as: UInt32.self)
    }

    @inline(__always)
    static func isProbe(_ p: UnsafeRawPointer) -> Bool { p.loadUnaligned(fromByteOffset: 0, as: UInt32.self) == magic }
    @inline(__always)
    static func step(_ p: UnsafeRawPointer) -> UInt32 { p.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }
    @inline(__always)
    static func sequence(_ p: UnsafeRawPointer) -> UInt64 { p.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }
    @inline(__always)
    static func sentAt(_ p: UnsafeRawPointer) -> UInt64 { p.loadUnaligned(fromByteOffset: 16, as: UInt64.self) }
}
