import FZControl
import Foundation
import GRDB
import Portal

/// The embedded store: one SQLite file in WAL mode (GRDB `DatabasePool`: concurrent readers,
/// one writer), foreign keys on, migrated at open.
public final class SQLiteStore: PortalStore {
    let pool: DatabasePool

    /// Opens (creating if needed) the database file and applies pending migrations.
    public init(path: String) throws {
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(5)
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        pool = try DatabasePool(path: path, configuration: config)
        try SQLiteSchema.migrator.migrate(pool)
    }

    public convenience init(url: String) throws {
        switch try DatabaseURL(parsing: url) {
        case .sqlite(let path): try self.init(path: path)
        }
    }

    /// The applied migrations, oldest first (for tests and `/readyz` details).
    public func appliedMigrations() throws -> [String] {
        try pool.read { try SQLiteSchema.migrator.appliedMigrations($0) }
    }

    /// The journal mode in force ("wal").
    func journalMode() throws -> String {
        try pool.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") ?? "" }
    }

    func write<T: Sendable>(_ body: @Sendable @escaping (Database) throws -> T) async throws -> T {
        do { return try await pool.write(body) } catch let e as DatabaseError where e.resultCode == .SQLITE_CONSTRAINT {
            throw StoreError.conflict(field: Self.constraintField(e), reason: "already exists")
        }
    }

    func read<T: Sendable>(_ body: @Sendable @escaping (Database) throws -> T) async throws -> T {
        try await pool.read(body)
    }

    /// `UNIQUE constraint failed: clients.public_key` → `public_key`.
    static func constraintField(_ e: DatabaseError) -> String {
        guard let m = e.message, let dot = m.lastIndex(of: ".") else { return "id" }
        return String(m[m.index(after: dot)...])
    }

    static func exists(_ db: Database, _ table: String, _ id: String) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM \(table) WHERE id = ?)", arguments: [id]) ?? false
    }

    static func require(_ db: Database, _ table: String, _ id: String, field: String) throws {
        guard try exists(db, table, id) else { throw StoreError.unknownReference(field: field) }
    }

    /// Deletes one row by id, first collecting the policies the cascade will take with it.
    static func delete(_ db: Database, table: String, id: String, policiesWhere: String?) throws -> Deletion {
        guard try exists(db, table, id) else { return .notFound }
        let removed = try policiesWhere.map { try Rows.policies(db, where: $0, [id]) } ?? []
        try db.execute(sql: "DELETE FROM \(table) WHERE id = ?", arguments: [id])
        return Deletion(found: true, removedPolicies: removed)
    }
}
