import Testing

@testable import WireGuard

@Suite("Replay window (whitepaper §5.4.6, RFC 6479)")
struct ReplayWindowTests {
    let limit = Constants.rejectAfterMessages

    /// A reference wrapper so mutating calls can sit inside `#expect`.
    final class Window {
        var window = ReplayWindow()
        func accept(_ c: UInt64) -> Bool { window.accept(c, limit: Constants.rejectAfterMessages) }
        func isAcceptable(_ c: UInt64) -> Bool { window.isAcceptable(c, limit: Constants.rejectAfterMessages) }
        var highest: UInt64 { window.highest }
    }

    @Test("counters in order are each accepted once; duplicates are refused")
    func inOrderAndDuplicates() {
        let w = Window()
        for c: UInt64 in 0..<100 { #expect(w.accept(c)) }
        for c: UInt64 in [0, 1, 50, 99] { #expect(!w.accept(c)) }
    }

    @Test("out-of-order counters within the window are accepted, once")
    func outOfOrder() {
        let w = Window()
        for c: UInt64 in [10, 3, 7, 0, 9, 1, 2000, 1500, 11, 4] { #expect(w.accept(c), "\(c)") }
        for c: UInt64 in [10, 3, 2000, 1500] { #expect(!w.accept(c), "\(c)") }
    }

    @Test("the window reaches back at least 2048 counters (8128 here) and no further")
    func windowSize() {
        #expect(ReplayWindow.windowSize >= 2048)
        let w = Window()
        let top: UInt64 = 100_000
        #expect(w.accept(top))
        #expect(w.accept(top - 2048))
        #expect(w.accept(top - ReplayWindow.windowSize))
        #expect(!w.accept(top - ReplayWindow.windowSize - 1), "too old")
        #expect(!w.accept(0), "too old")
    }

    @Test("every counter of a window-sized burst delivered in reverse is accepted")
    func reverseBurst() {
        let w = Window()
        let top = ReplayWindow.windowSize + 1
        for c in stride(from: top, through: 1, by: -1) { #expect(w.accept(c)) }
        #expect(!w.accept(0), "0 fell out of the window")
    }

    @Test("a jump far ahead forgets the old bitmap: counters just behind the new top are fresh")
    func jumpAhead() {
        let w = Window()
        for c: UInt64 in 0..<200 { _ = w.accept(c) }
        let far: UInt64 = 1_000_000
        #expect(w.accept(far))
        // Same ring positions as counters 0..<200 had: must not be reported as seen.
        let alias = far - (far % 8192)
        for c in alias..<(alias + 200) where c < far { #expect(w.accept(c)) }
        #expect(!w.accept(199))
    }

    @Test("counters at or beyond REJECT_AFTER_MESSAGES are refused, the last ones below it are not")
    func limitEdge() {
        let w = Window()
        #expect(!w.accept(limit))
        #expect(!w.accept(UInt64.max))
        #expect(w.accept(limit - 1))
        #expect(!w.accept(limit - 1))
        #expect(w.accept(limit - 2))
        #expect(!w.accept(0))
    }

    @Test("the pre-check changes nothing: only accept moves the window")
    func precheckIsPure() {
        let w = Window()
        #expect(w.accept(5))
        #expect(w.isAcceptable(100_000))
        #expect(w.isAcceptable(4))
        #expect(!w.isAcceptable(5))
        #expect(w.highest == 5)
        #expect(w.accept(4))
    }
}
