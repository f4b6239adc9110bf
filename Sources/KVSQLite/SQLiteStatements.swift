// The SQL text of the SQLite backend's hot paths, prepared once per connection.

enum SQL {
    static let selectVersionstamp =
        "SELECT versionstamp FROM entries WHERE key = ?1 AND (expires_at_ms IS NULL OR expires_at_ms > ?2)"
    static let selectValue =
        "SELECT value, encoding FROM entries WHERE key = ?1 AND (expires_at_ms IS NULL OR expires_at_ms > ?2)"
    static let upsert = """
        INSERT INTO entries (key, value, encoding, versionstamp, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
        ON CONFLICT(key) DO UPDATE SET value = excluded.value, encoding = excluded.encoding,
        versionstamp = excluded.versionstamp, expires_at_ms = excluded.expires_at_ms
        """
    static let delete = "DELETE FROM entries WHERE key = ?1"
    static let insertQueueMessage = """
        INSERT INTO queue_messages (payload, deadline_ms, keys_if_undelivered, backoff_schedule, attempts, state, lease_until_ms)
        VALUES (?1, ?2, ?3, ?4, 0, 'ready', NULL)
        """
    static let rangeAsc = """
        SELECT key, value, encoding, versionstamp FROM entries
        WHERE key >= ?1 AND key < ?2 AND (expires_at_ms IS NULL OR expires_at_ms > ?3)
        ORDER BY key ASC LIMIT ?4
        """
    static let rangeDesc = """
        SELECT key, value, encoding, versionstamp FROM entries
        WHERE key >= ?1 AND key < ?2 AND (expires_at_ms IS NULL OR expires_at_ms > ?3)
        ORDER BY key DESC LIMIT ?4
        """
    static let updateCounter = "UPDATE meta SET value = ?1 WHERE key = 'commit_counter'"
    static let countQueue = "SELECT COUNT(*) FROM queue_messages"
    static let sweepExpired = """
        DELETE FROM entries WHERE key IN (
            SELECT key FROM entries WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1
            ORDER BY expires_at_ms LIMIT ?2)
        RETURNING key
        """
    static let nextExpiry = "SELECT MIN(expires_at_ms) FROM entries WHERE expires_at_ms IS NOT NULL"
}
