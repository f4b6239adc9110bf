// Recent commits of a PostgreSQL-backed database, from its commit-marker
// table (one row per group-commit transaction), for choosing a recovery
// point: `kvconnectd pitr list` and `kvconnectd pitr checkout`. The row's
// xmin is the id of the transaction that committed the batch, which is what
// PostgreSQL's `recovery_target_xid` takes: recovering to it (inclusive)
// gives exactly the state just after that batch.

import Foundation
import KVEngine

public struct CommitRecord: Sendable, Equatable {
    /// First and last versionstamp the transaction committed (a group commit
    /// holds one or more atomic writes, with consecutive versionstamps).
    public var firstVersionstamp: Versionstamp
    public var lastVersionstamp: Versionstamp
    /// Commit time (ms since the epoch): exact with PostgreSQL's
    /// `track_commit_timestamp = on`, else the transaction's start time.
    public var committedAtMs: Int64
    public var exactTime: Bool
    /// PostgreSQL transaction id, for `recovery_target_xid`.
    public var xid: String
}

public enum PostgresCommitLog {
    static func query(where condition: String) -> String {
        """
        SELECT counter, prev, ms, exact, xid FROM (
            SELECT counter,
                   COALESCE(lag(counter) OVER (ORDER BY counter), counter - 1) AS prev,
                   (extract(epoch FROM COALESCE(CASE WHEN current_setting('track_commit_timestamp') = 'on'
                        THEN pg_xact_commit_timestamp(xmin) END, committed_at)) * 1000)::int8 AS ms,
                   current_setting('track_commit_timestamp') = 'on' AS exact,
                   xmin::text AS xid
            FROM commit_markers) m
        \(condition)
        """
    }

    /// The newest `limit` commits, newest first. Markers are kept for the
    /// store's marker retention; older commits are not listed.
    public static func recent(url: String, schema: String = "kvconnectd", limit: Int) throws -> [CommitRecord] {
        try run(url: url, schema: schema, query(where: "ORDER BY counter DESC LIMIT $1"), [.int8(Int64(limit))])
    }

    /// The commit whose batch holds `versionstamp`, or nil if it is not in
    /// the retained markers.
    public static func commit(
        containing versionstamp: Versionstamp, url: String,
        schema: String = "kvconnectd"
    ) throws -> CommitRecord? {
        guard let c = Versionstamps.counter(of: versionstamp) else {
            throw KVError.invalidMutation("a versionstamp is 10 bytes (20 hex digits)")
        }
        return try run(
            url: url, schema: schema,
            query(where: "WHERE counter >= $1 AND prev < $1 ORDER BY counter LIMIT 1"),
            [.int8(Int64(bitPattern: c))]
        ).first
    }

    static func run(url: String, schema: String, _ sql: String, _ params: [PGParam]) throws -> [CommitRecord] {
        do {
            let c = try PGConnection(conninfo: url, searchPath: schema)
            defer { c.close() }
            let r = try c.query(sql, params)
            return (0..<r.rowCount).map { row in
                let last = UInt64(bitPattern: r.int64(row, 0)), prev = UInt64(bitPattern: r.int64(row, 1))
                return CommitRecord(
                    firstVersionstamp: Versionstamps.make(counter: prev + 1),
                    lastVersionstamp: Versionstamps.make(counter: last),
                    committedAtMs: r.int64(row, 2), exactTime: r.bool(row, 3), xid: r.text(row, 4))
            }
        } catch let e as PGError {
            throw e.asKVError
        }
    }
}
