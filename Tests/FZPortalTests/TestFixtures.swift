import FZControl
import FZCore
import Foundation
import Portal
@testable import FZPortal

/// A database file in a fresh temporary directory, removed by `cleanup()`.
struct TempDatabase {
    let directory: URL
    var path: String { directory.appendingPathComponent("portal.sqlite").path }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fz-portal-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    func open() throws -> SQLiteStore { try SQLiteStore(path: path) }

    func cleanup() { try? FileManager.default.removeItem(at: directory) }
}

enum Fixture {
    static func key(_ n: UInt8) -> WireGuardKey { WireGuardKey(bytes: Array(repeating: n, count: 32)) }
    static let now = UnixTime(seconds: 1_772_616_600)
}
