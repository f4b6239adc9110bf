// Bulk copy (`kvconnectd copy`) on PostgreSQL: entries and queue messages as
// stored, in pages; an import page in one transaction that takes the counter
// row like a commit (so it orders with the daemons' commits), with the copy's
// progress marker in `copy_progress`.

import Foundation
import KVEngine

enum PGBulkCopySQL {
    static let scanFirst = "SELECT key, value, encoding, versionstamp, expires_at_ms FROM entries ORDER BY key LIMIT $1"
    static let scanAfter =
        "SELECT key, value, encoding, versionstamp, expires_at_ms FROM entries WHERE key > $2 ORDER BY key LIMIT $1"
    static let scanQueue = """
        SELECT id, payload, deadline_ms, keys_if_undelivered, backoff_schedule, attempts FROM queue_messages
        WHERE id > $2 ORDER BY id LIMIT $1
        """
    static let insertMessages = """
        INSERT INTO queue_messages (payload, deadline_ms, keys_if_undelivered, backoff_schedule, attempts)
        SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::text[], $5::int8[])
        """
    static let createProgress = """
        CREATE TABLE IF NOT EXISTS copy_progress (name text PRIMARY KEY, position bytea NOT NULL)
        """
    static let setProgress = """
        INSERT INTO copy_progress (name, position) VALUES ($1, $2)
        ON CONFLICT (name) DO UPDATE SET position = excluded.position
        """
    static let getProgress = "SELECT position FROM copy_progress WHERE name = $1"
    static let hasProgressTable = "SELECT to_regclass('copy_progress') IS NOT NULL"
}

extension PostgresStore {
    public func scanEntries(after: Bytes?, limit: Int) throws -> [StoredEntry] {
        do {
            let r = try reads.withConnection { c in
                after == nil
                    ? try c.query(PGBulkCopySQL.scanFirst, [.int8(Int64(limit))])
                    : try c.query(PGBulkCopySQL.scanAfter, [.int8(Int64(limit)), .bytea(after!)])
            }
            return try (0..<r.rowCount).map { i in
                guard let enc = ValueEncoding(rawValue: Int32(r.int64(i, 2))) else {
                    throw KVError.internalError("unknown value encoding \(r.int64(i, 2)) in the database")
                }
                return StoredEntry(
                    key: r.bytes(i, 0), value: KVValue(data: r.bytes(i, 1), encoding: enc),
                    versionstamp: r.bytes(i, 3), expiresAtMs: r.optionalInt64(i, 4))
            }
        } catch let e as PGError {
            throw e.asKVError
        }
    }

    public func scanQueueMessages(after: Int64?, limit: Int) throws -> [StoredQueueMessage] {
        do {
            let r = try reads.withConnection { c in
                try c.query(PGBulkCopySQL.scanQueue, [.int8(Int64(limit)), .int8(after ?? Int64.min)])
            }
            return (0..<r.rowCount).map { i in
                StoredQueueMessage(
                    id: r.int64(i, 0),
                    enqueue: Enqueue(
                        payload: r.bytes(i, 1), deadlineMs: r.int64(i, 2),
                        keysIfUndelivered: QueueKeysCodec.decode(r.bytes(i, 3)) ?? [],
                        backoffSchedule: QueueKeysCodec.decodeBackoff(r.text(i, 4)) ?? []),
                    attempts: Int(r.int64(i, 5)))
            }
        } catch let e as PGError {
            throw e.asKVError
        }
    }

    /// On a connection of its own, not retried: a lost COMMIT must not
    /// insert the page's queue messages twice (a re-run of the copy resumes
    /// from the marker instead).
    public func importBulk(_ batch: BulkImport) throws {
        let c: PGConnection
        do { c = try ctx.connect() } catch let e as PGError { throw e.asKVError }
        defer { c.close() }
        do {
            let maxCounter = batch.entries.map { Versionstamps.counter(of: $0.versionstamp) ?? 0 }.max() ?? 0
            // Its own statement: a pipeline prepares every statement before the CREATE runs.
            try c.execScript(PGBulkCopySQL.createProgress)
            var queries = [PGQuery("BEGIN"), PGQuery(PGSQL.lockCounter)]
            if !batch.entries.isEmpty {
                queries.append(
                    PGQuery(
                        PGSQL.upsert,
                        [
                            .byteaArray(batch.entries.map(\.key)), .byteaArray(batch.entries.map(\.value.data)),
                            .int2Array(batch.entries.map { Int16($0.value.encoding.rawValue) }),
                            .byteaArray(batch.entries.map(\.versionstamp)), .int8Array(batch.entries.map(\.expiresAtMs))
                        ]))
            }
            if !batch.messages.isEmpty {
                queries.append(
                    PGQuery(
                        PGBulkCopySQL.insertMessages,
                        [
                            .byteaArray(batch.messages.map(\.enqueue.payload)),
                            .int8Array(batch.messages.map { $0.enqueue.deadlineMs }),
                            .byteaArray(batch.messages.map { QueueKeysCodec.encode($0.enqueue.keysIfUndelivered) }),
                            .textArray(batch.messages.map { QueueKeysCodec.encodeBackoff($0.enqueue.backoffSchedule) }),
                            .int8Array(batch.messages.map { Int64($0.attempts) })
                        ]))
            }
            queries.append(
                PGQuery(
                    "UPDATE meta SET counter = GREATEST(counter, $1) WHERE id = 1 RETURNING counter",
                    [.int8(Int64(bitPattern: maxCounter))]))
            queries.append(PGQuery(PGBulkCopySQL.setProgress, [.text(batch.progressName), .bytea(batch.progress)]))
            queries.append(PGQuery("COMMIT"))
            let results = try c.pipeline(queries)
            let counter = results[results.count - 3]
            if counter.rowCount == 1 { ctx.noteCounter(UInt64(bitPattern: counter.int64(0, 0))) }
        } catch let e as PGError {
            c.rollbackQuietly()
            throw e.asKVError
        }
    }

    public func copyProgress(name: String) throws -> Bytes? {
        do {
            return try reads.withConnection { c in
                let has = try c.query(PGBulkCopySQL.hasProgressTable)
                guard has.rowCount == 1, has.bool(0, 0) else { return nil }
                let r = try c.query(PGBulkCopySQL.getProgress, [.text(name)])
                return r.rowCount == 1 ? r.bytes(0, 0) : nil
            }
        } catch let e as PGError {
            throw e.asKVError
        }
    }
}
