// Database schema and migrations. `migrations[i]` takes a database from
// schema version i to i+1; all pending migrations run in one transaction on
// open, so an old file opens in a newer daemon. Append new migrations; never
// edit a released one.

import KVEngine
import Foundation

enum Schema {
    typealias Migration = @Sendable (SQLiteConnection) throws -> Void

    static let migrations: [Migration] = [
        // 0 → 1: key/value entries and metadata.
        { c in
            try c.execScript(
                """
                CREATE TABLE meta (
                    key TEXT PRIMARY KEY NOT NULL,
                    value ANY
                );
                CREATE TABLE entries (
                    key BLOB PRIMARY KEY NOT NULL,
                    value BLOB NOT NULL,
                    encoding INTEGER NOT NULL,
                    versionstamp BLOB NOT NULL
                ) WITHOUT ROWID;
                """)
        },
        // 1 → 2: expiry.
        { c in
            try c.execScript(
                """
                ALTER TABLE entries ADD COLUMN expires_at_ms INTEGER NULL;
                CREATE INDEX entries_expires_at_ms ON entries (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
                """)
        },
        // 2 → 3: queue messages (persisted by enqueues; dispatched later).
        { c in
            try c.execScript(
                """
                CREATE TABLE queue_messages (
                    id INTEGER PRIMARY KEY,
                    payload BLOB NOT NULL,
                    deadline_ms INTEGER NOT NULL,
                    keys_if_undelivered BLOB NOT NULL,
                    backoff_schedule TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    state TEXT NOT NULL DEFAULT 'ready',
                    lease_until_ms INTEGER NULL
                );
                CREATE INDEX queue_messages_state_deadline ON queue_messages (state, deadline_ms);
                """)
        },
        // 3 → 4: queue delivery: a lease generation, so that an ack or fail
        // from a lease that expired (and was re-leased) is refused.
        { c in
            try c.execScript(
                """
                ALTER TABLE queue_messages ADD COLUMN lease_seq INTEGER NOT NULL DEFAULT 0;
                """)
        },
        // 4 → 5: message ids are never reused (AUTOINCREMENT). A plain
        // INTEGER PRIMARY KEY hands out max(id) + 1, so once the newest
        // message was delivered its id came back for the next enqueue: the
        // webhook's message id (documented as the idempotency key) repeated,
        // and a stale lease handle "<id>-<seq>" could settle a new message.
        { c in
            try c.execScript(
                """
                CREATE TABLE queue_messages_v5 (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    payload BLOB NOT NULL,
                    deadline_ms INTEGER NOT NULL,
                    keys_if_undelivered BLOB NOT NULL,
                    backoff_schedule TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    state TEXT NOT NULL DEFAULT 'ready',
                    lease_until_ms INTEGER NULL,
                    lease_seq INTEGER NOT NULL DEFAULT 0
                );
                INSERT INTO queue_messages_v5 (id, payload, deadline_ms, keys_if_undelivered, backoff_schedule,
                                               attempts, state, lease_until_ms, lease_seq)
                    SELECT id, payload, deadline_ms, keys_if_undelivered, backoff_schedule,
                           attempts, state, lease_until_ms, lease_seq FROM queue_messages;
                DROP TABLE queue_messages;
                ALTER TABLE queue_messages_v5 RENAME TO queue_messages;
                CREATE INDEX queue_messages_state_deadline ON queue_messages (state, deadline_ms);
                """)
        }
    ]

    static var latestVersion: Int { migrations.count }

    static let databaseIdKey = "database_id"
    static let commitCounterKey = "commit_counter"

    /// Reads the schema version (0 for a new file). Must run inside a transaction.
    static func currentVersion(_ c: SQLiteConnection) throws -> Int {
        try c.execScript(
            """
            CREATE TABLE IF NOT EXISTS schema_version (
                id INTEGER PRIMARY KEY CHECK (id = 0),
                version INTEGER NOT NULL
            );
            """)
        let s = try c.statement("SELECT version FROM schema_version WHERE id = 0")
        defer { s.reset() }
        return try s.step() ? Int(s.columnInt64(0)) : 0
    }

    /// Brings the database to `targetVersion` (default: latest) and makes sure
    /// the meta rows exist. Returns (databaseId, commitCounter).
    @discardableResult
    static func migrate(_ c: SQLiteConnection, to targetVersion: Int = latestVersion) throws -> (String, UInt64) {
        try c.run("BEGIN IMMEDIATE")
        do {
            let current = try currentVersion(c)
            if current > latestVersion {
                throw KVError.internalError(
                    "database schema version \(current) is newer than this daemon supports (\(latestVersion))")
            }
            if current < targetVersion {
                for v in current..<targetVersion {
                    try migrations[v](c)
                }
                let s = try c.statement(
                    "INSERT INTO schema_version (id, version) VALUES (0, ?) ON CONFLICT(id) DO UPDATE SET version = excluded.version"
                )
                defer { s.reset() }
                s.bind(1, Int64(targetVersion))
                try s.step()
            }
            let ins = try c.statement("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)")
            ins.bind(1, databaseIdKey)
            ins.bind(2, UUID().uuidString.lowercased())
            try ins.step()
            ins.reset()
            ins.bind(1, commitCounterKey)
            ins.bind(2, Int64(0))
            try ins.step()
            ins.reset()

            let sel = try c.statement("SELECT value FROM meta WHERE key = ?")
            sel.bind(1, databaseIdKey)
            guard try sel.step(), let id = sel.columnText(0) else {
                sel.reset()
                throw KVError.internalError("database id missing")
            }
            sel.reset()
            sel.bind(1, commitCounterKey)
            guard try sel.step() else {
                sel.reset()
                throw KVError.internalError("commit counter missing")
            }
            let counter = UInt64(bitPattern: sel.columnInt64(0))
            sel.reset()
            try c.run("COMMIT")
            return (id, counter)
        } catch {
            if !c.isAutocommit { try? c.run("ROLLBACK") }
            throw error
        }
    }
}
