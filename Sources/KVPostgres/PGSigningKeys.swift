// Secrets every daemon of a database must share: the data-plane token
// signing keys. Stored in the database so all daemons agree; created once
// (whoever starts first) and rotated keeping the previous key valid.

import KVEngine

public struct SigningKeyRecord: Sendable, Equatable {
    public var keyId: String
    public var secret: Bytes
    /// Unix milliseconds.
    public var createdAtMs: Int64
    public init(keyId: String, secret: Bytes, createdAtMs: Int64) {
        self.keyId = keyId
        self.secret = secret
        self.createdAtMs = createdAtMs
    }
}

extension PostgresStore {
    private static let selectKeys = """
        SELECT key_id, secret, (extract(epoch FROM created_at) * 1000)::int8 FROM signing_keys
        ORDER BY created_at DESC, key_id DESC
        """
    private static let lockKeys = "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))"
    private static let insertKey =
        "INSERT INTO signing_keys (key_id, secret) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING"
    private static let pruneKeys = """
        DELETE FROM signing_keys WHERE key_id NOT IN (
            SELECT key_id FROM signing_keys ORDER BY created_at DESC, key_id DESC LIMIT $1)
        """

    private static func records(_ r: PGResult) -> [SigningKeyRecord] {
        (0..<r.rowCount).map {
            SigningKeyRecord(keyId: r.text($0, 0), secret: r.bytes($0, 1), createdAtMs: r.int64($0, 2))
        }
    }

    /// All signing keys, newest first. Throws KVError.
    public func signingKeys() throws -> [SigningKeyRecord] {
        try reads.withConnection { c in Self.records(try c.query(Self.selectKeys)) }
    }

    /// Stores (keyId, secret) if the database has no signing key yet; returns
    /// the keys, newest first. Daemons starting together agree on one key.
    public func ensureSigningKey(keyId: String, secret: Bytes) throws -> [SigningKeyRecord] {
        try reads.withConnection { c in
            do {
                let r = try c.pipeline([
                    PGQuery(PGSQL.begin),
                    PGQuery(Self.lockKeys, [.int8(Int64(PGSchema.LockSpace.signingKeys.rawValue)), .text(ctx.schema)]),
                    PGQuery(Self.selectKeys)
                ])
                if r[2].rowCount == 0 {
                    _ = try c.pipeline([PGQuery(Self.insertKey, [.text(keyId), .bytea(secret)]), PGQuery("COMMIT")])
                } else {
                    try c.execScript("COMMIT")
                }
                return Self.records(try c.query(Self.selectKeys))
            } catch {
                c.rollbackQuietly()
                throw error
            }
        }
    }

    /// Adds a new newest key and keeps only the newest `keep` (≥ 2, so the
    /// previous key stays valid for tokens already issued).
    public func rotateSigningKey(keyId: String, secret: Bytes, keep: Int = 2) throws -> [SigningKeyRecord] {
        try reads.withConnection { c in
            do {
                _ = try c.pipeline([
                    PGQuery(PGSQL.begin),
                    PGQuery(Self.lockKeys, [.int8(Int64(PGSchema.LockSpace.signingKeys.rawValue)), .text(ctx.schema)]),
                    PGQuery(Self.insertKey, [.text(keyId), .bytea(secret)]),
                    PGQuery(Self.pruneKeys, [.int8(Int64(max(2, keep)))]),
                    PGQuery("COMMIT")
                ])
                return Self.records(try c.query(Self.selectKeys))
            } catch {
                c.rollbackQuietly()
                throw error
            }
        }
    }
}
