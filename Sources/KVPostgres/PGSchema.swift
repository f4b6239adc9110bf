// The PostgreSQL schema and its migrations. `migrations[i]` takes the schema
// from version i to i+1. Every daemon runs `migrate` on start inside one
// transaction that first takes a transaction-scoped advisory lock, so daemons
// starting at the same moment migrate one after the other (the later ones
// find nothing to do). Append new migrations; never edit a released one.

import Foundation
import KVEngine

enum PGSchema {
    /// Advisory lock namespaces (first key of the two-int form); the second
    /// key is hashtext(schema name), so several databases share a server.
    enum LockSpace: Int32 {
        case migrate = 0x6B76_0001
        case sweep = 0x6B76_0002
        case daemon = 0x6B76_0003
        case signingKeys = 0x6B76_0004
    }

    static let migrations: [String] = [
        // 0 → 1
        """
        CREATE TABLE meta (
            id smallint PRIMARY KEY CHECK (id = 1),
            database_id text NOT NULL,
            -- The commit counter: every commit locks this row first, which
            -- orders commits (and so versionstamps) across all daemons.
            counter bigint NOT NULL
        );
        CREATE TABLE entries (
            key bytea PRIMARY KEY,
            value bytea NOT NULL,
            encoding smallint NOT NULL,
            versionstamp bytea NOT NULL,
            expires_at_ms bigint
        );
        CREATE INDEX entries_expires_at_ms ON entries (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
        CREATE TABLE queue_messages (
            id bigserial PRIMARY KEY,
            payload bytea NOT NULL,
            deadline_ms bigint NOT NULL,
            keys_if_undelivered bytea NOT NULL,
            backoff_schedule text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            state text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'inflight')),
            lease_until_ms bigint,
            lease_seq bigint NOT NULL DEFAULT 0,
            -- Daemon instance that pushes this attempt (NULL: a pull lease).
            leased_by text
        );
        CREATE INDEX queue_messages_ready ON queue_messages (deadline_ms, id) WHERE state = 'ready';
        CREATE INDEX queue_messages_inflight ON queue_messages (lease_until_ms) WHERE state = 'inflight';
        -- One row per group commit, to learn after a lost connection whether
        -- a COMMIT whose answer never arrived took effect. Pruned after minutes.
        CREATE TABLE commit_markers (
            batch_id bytea PRIMARY KEY,
            counter bigint NOT NULL,
            committed_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX commit_markers_committed_at ON commit_markers (committed_at);
        -- Secrets every daemon of the database shares (data-plane token signing keys).
        CREATE TABLE signing_keys (
            key_id text PRIMARY KEY,
            secret bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """
    ]

    static var latestVersion: Int { migrations.count }

    /// Creates or migrates the schema; returns (databaseId, commitCounter).
    static func migrate(_ c: PGConnection, schema: String) throws -> (String, UInt64) {
        let q = PGConnection.quoteIdentifier(schema)
        do {
            try c.execScript("BEGIN")
            try c.query(
                "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))",
                [.int8(Int64(LockSpace.migrate.rawValue)), .text(schema)])
            try c.execScript(
                """
                CREATE SCHEMA IF NOT EXISTS \(q);
                CREATE TABLE IF NOT EXISTS \(q).schema_version (
                    id smallint PRIMARY KEY CHECK (id = 0),
                    version integer NOT NULL
                );
                SET LOCAL search_path TO \(q);
                """)
            let v = try c.query("SELECT version FROM \(q).schema_version WHERE id = 0")
            let current = v.rowCount > 0 ? Int(v.int64(0, 0)) : 0
            if current > latestVersion {
                throw KVError.internalError(
                    "database schema version \(current) is newer than this daemon supports (\(latestVersion))")
            }
            for i in current..<latestVersion { try c.execScript(migrations[i]) }
            if current < latestVersion {
                try c.query(
                    """
                    INSERT INTO \(q).schema_version (id, version) VALUES (0, $1::int4)
                    ON CONFLICT (id) DO UPDATE SET version = excluded.version
                    """, [.int8(Int64(latestVersion))])
            }
            try c.query(
                "INSERT INTO \(q).meta (id, database_id, counter) VALUES (1, $1, 0) ON CONFLICT (id) DO NOTHING",
                [.text(UUID().uuidString.lowercased())])
            let m = try c.query("SELECT database_id, counter FROM \(q).meta WHERE id = 1")
            guard m.rowCount == 1 else { throw KVError.internalError("meta row missing") }
            let out = (m.text(0, 0), UInt64(bitPattern: m.int64(0, 1)))
            try c.execScript("COMMIT")
            return out
        } catch {
            c.rollbackQuietly()
            throw error
        }
    }
}
