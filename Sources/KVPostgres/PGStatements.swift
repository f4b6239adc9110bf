// The SQL the store runs, in one place. Tables are found through the
// connection's search_path (the configured schema).

enum PGSQL {
    /// Commits rely on READ COMMITTED: each statement sees every transaction
    /// committed before it started (the key fetch after the counter lock sees
    /// the previous commit). Explicit, whatever the server's default.
    static let begin = "BEGIN ISOLATION LEVEL READ COMMITTED"
    static let lockCounter = "SELECT counter FROM meta WHERE id = 1 FOR UPDATE"
    static let storeCounter = "UPDATE meta SET counter = $1 WHERE id = 1"
    static let readCounter = "SELECT counter FROM meta WHERE id = 1"

    static let selectKeys = """
        SELECT key, value, encoding, versionstamp, expires_at_ms FROM entries
        WHERE key = ANY($1) AND (expires_at_ms IS NULL OR expires_at_ms > $2)
        """
    static let upsert = """
        INSERT INTO entries (key, value, encoding, versionstamp, expires_at_ms)
        SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int2[], $4::bytea[], $5::int8[])
        ON CONFLICT (key) DO UPDATE SET value = excluded.value, encoding = excluded.encoding,
            versionstamp = excluded.versionstamp, expires_at_ms = excluded.expires_at_ms
        """
    static let deleteKeys = "DELETE FROM entries WHERE key = ANY($1)"
    static let insertQueueMessages = """
        INSERT INTO queue_messages (payload, deadline_ms, keys_if_undelivered, backoff_schedule)
        SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::text[])
        """
    static let insertMarker = "INSERT INTO commit_markers (batch_id, counter) VALUES ($1, $2)"
    static let findMarker = "SELECT counter FROM commit_markers WHERE batch_id = $1"
    static let pruneMarkers =
        "DELETE FROM commit_markers WHERE committed_at < now() - make_interval(secs => $1::int8 / 1000.0)"
    static let notify = "SELECT pg_notify($1, $2)"

    static let rangeAsc = """
        SELECT key, value, encoding, versionstamp FROM entries
        WHERE key >= $1 AND key < $2 AND (expires_at_ms IS NULL OR expires_at_ms > $3)
        ORDER BY key ASC LIMIT $4
        """
    static let rangeDesc = """
        SELECT key, value, encoding, versionstamp FROM entries
        WHERE key >= $1 AND key < $2 AND (expires_at_ms IS NULL OR expires_at_ms > $3)
        ORDER BY key DESC LIMIT $4
        """

    static let trySweepLock = "SELECT pg_try_advisory_xact_lock($1::int4, hashtext($2))"
    static let sweepExpired = """
        DELETE FROM entries WHERE key IN (
            SELECT key FROM entries WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= $1
            ORDER BY expires_at_ms LIMIT $2)
        RETURNING key
        """
    static let nextExpiry = "SELECT MIN(expires_at_ms) FROM entries WHERE expires_at_ms IS NOT NULL"

    static let stats = """
        SELECT pg_total_relation_size('entries') + pg_total_relation_size('queue_messages'),
               (SELECT COUNT(*) FROM entries)
        """
}
