#if canImport(Glibc)
import Glibc
#endif
import FZCore
import FZLinux
import Testing

@Suite("AbstractLock")
struct AbstractLockTests {
    static func uniqueName(_ tag: String) -> String { "fz-test/\(tag)/\(getpid())/\(UInt64.random(in: 0...UInt64.max))" }

    @Test("a name is held by one lock at a time and free again once released")
    func exclusiveUntilReleased() throws {
        let name = Self.uniqueName("exclusive")
        let first = try AbstractLock(name: name)
        let error = #expect(throws: SystemError.self) { _ = try AbstractLock(name: name) }
        #expect(error.map(AbstractLock.isHeldElsewhere) == true)
        first.release()
        let second = try AbstractLock(name: name)
        second.release()
    }

    @Test("acquire gives up after its timeout while the name is held")
    func acquireTimesOut() throws {
        let name = Self.uniqueName("timeout")
        let held = try AbstractLock(name: name)
        defer { held.release() }
        let start = MonotonicClock.now()
        let error = #expect(throws: SystemError.self) { _ = try AbstractLock.acquire(name: name, timeout: .milliseconds(50)) }
        #expect(error?.errno == EADDRINUSE)
        #expect(MonotonicClock.now() - start >= .milliseconds(50))
    }

    @Test("a lock dropped with its owner frees the name")
    func deinitReleases() throws {
        let name = Self.uniqueName("deinit")
        do { _ = try AbstractLock(name: name) }
        let again = try AbstractLock.acquire(name: name, timeout: .zero)
        again.release()
    }
}
