import GRDB

/// Versioned schema. Migrations are append-only: a released migration is never edited; a change
/// is a new `registerMigration` (GRDB records applied ones in `grdb_migrations`).
enum SQLiteSchema {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1: entities") { db in
            try db.execute(sql: """
                CREATE TABLE actors (id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL);
                CREATE TABLE groups (id TEXT PRIMARY KEY, name TEXT NOT NULL);
                CREATE TABLE memberships (
                    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
                    actor_id TEXT NOT NULL REFERENCES actors(id) ON DELETE CASCADE,
                    PRIMARY KEY (group_id, actor_id));
                CREATE INDEX memberships_actor ON memberships(actor_id);
                CREATE TABLE sites (id TEXT PRIMARY KEY, name TEXT NOT NULL);
                CREATE TABLE gateways (
                    id TEXT PRIMARY KEY,
                    site_id TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
                    name TEXT NOT NULL, public_key TEXT NOT NULL,
                    UNIQUE (site_id, public_key));
                CREATE TABLE resources (
                    id TEXT PRIMARY KEY,
                    site_id TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
                    name TEXT NOT NULL, address TEXT NOT NULL, filters TEXT NOT NULL);
                CREATE TABLE policies (
                    id TEXT PRIMARY KEY,
                    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
                    resource_id TEXT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
                    conditions TEXT NOT NULL);
                CREATE INDEX policies_resource ON policies(resource_id);
                CREATE TABLE clients (
                    id TEXT PRIMARY KEY,
                    actor_id TEXT NOT NULL REFERENCES actors(id) ON DELETE CASCADE,
                    name TEXT NOT NULL, public_key TEXT NOT NULL UNIQUE,
                    ipv4 TEXT NOT NULL UNIQUE, ipv6 TEXT NOT NULL UNIQUE);
                CREATE TABLE relays (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, region TEXT NOT NULL, addresses TEXT NOT NULL);
                CREATE TABLE tokens (
                    id TEXT PRIMARY KEY, name TEXT NOT NULL, scope TEXT NOT NULL, subject TEXT,
                    hash BLOB NOT NULL UNIQUE, created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER);
                CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                """)
        }
        return m
    }
}
