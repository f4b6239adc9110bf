// Bulk copy (`kvconnectd copy`) on SQLite: entries and queue messages as
// stored, in pages from a read connection; an import page in one write
// transaction on the writer thread, with the copy's progress marker in `meta`.

import Foundation
import KVEngine

enum SQLiteBulkCopySQL {
    static let scanFirst = """
        SELECT key, value, encoding, versionstamp, expires_at_ms FROM entries ORDER BY key LIMIT ?1
        """
    static let scanAfter = """
        SELECT key, value, encoding, versionstamp, expires_at_ms FROM entries WHERE key > ?2 ORDER BY key LIMIT ?1
        """
    static let scanQueue = """
        SELECT id, payload, deadline_ms, keys_if_undelivered, backoff_schedule, attempts FROM queue_messages
        WHERE id > ?2 ORDER BY id LIMIT ?1
        """
    static let upsert = """
        INSERT INTO entries (key, value, encoding, versionstamp, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
        ON CONFLICT(key) DO UPDATE SET value = excluded.value, encoding = excluded.encoding,
        versionstamp = excluded.versionstamp, expires_at_ms = excluded.expires_at_ms
        """
    static let insertMessage = """
        INSERT INTO queue_messages (payload, deadline_ms, keys_if_undelivered, backoff_schedule, attempts, state, lease_until_ms)
        VALUES (?1, ?2, ?3, ?4, ?5, 'ready', NULL)
        """
    static let setMarker =
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
    static let getMarker = "SELECT value FROM meta WHERE key = ?1"
    static func markerKey(_ name: String) -> String { "copy_progress:" + name }
}

extension SQLiteStore {
    public func scanEntries(after: Bytes?, limit: Int) throws -> [StoredEntry] {
        try core.withReadConnection { c in
            let s = try c.statement(after == nil ? SQLiteBulkCopySQL.scanFirst : SQLiteBulkCopySQL.scanAfter)
            defer { s.reset() }
            s.bind(1, Int64(limit))
            if let after { s.bind(2, after) }
            var out: [StoredEntry] = []
            while try s.step() {
                guard let enc = ValueEncoding(rawValue: Int32(s.columnInt64(2))) else {
                    throw KVError.internalError("unknown value encoding \(s.columnInt64(2)) in the database")
                }
                out.append(
                    StoredEntry(
                        key: s.columnBytes(0), value: KVValue(data: s.columnBytes(1), encoding: enc),
                        versionstamp: s.columnBytes(3),
                        expiresAtMs: s.columnIsNull(4) ? nil : s.columnInt64(4)))
            }
            return out
        }
    }

    public func scanQueueMessages(after: Int64?, limit: Int) throws -> [StoredQueueMessage] {
        try core.withReadConnection { c in
            let s = try c.statement(SQLiteBulkCopySQL.scanQueue)
            defer { s.reset() }
            s.bind(1, Int64(limit))
            s.bind(2, after ?? Int64.min)
            var out: [StoredQueueMessage] = []
            while try s.step() {
                out.append(
                    StoredQueueMessage(
                        id: s.columnInt64(0),
                        enqueue: Enqueue(
                            payload: s.columnBytes(1), deadlineMs: s.columnInt64(2),
                            keysIfUndelivered: QueueKeysCodec.decode(s.columnBytes(3)) ?? [],
                            backoffSchedule: QueueKeysCodec.decodeBackoff(s.columnText(4) ?? "[]") ?? []),
                        attempts: Int(s.columnInt64(5))))
            }
            return out
        }
    }

    public func importBulk(_ batch: BulkImport) throws {
        try core.importOnWriter { c in
            var maxCounter: UInt64 = 0
            if !batch.entries.isEmpty {
                let s = try c.statement(SQLiteBulkCopySQL.upsert)
                for e in batch.entries {
                    s.bind(1, e.key)
                    s.bind(2, e.value.data)
                    s.bind(3, Int64(e.value.encoding.rawValue))
                    s.bind(4, e.versionstamp)
                    s.bind(5, e.expiresAtMs)
                    try s.step()
                    s.reset()
                    maxCounter = max(maxCounter, Versionstamps.counter(of: e.versionstamp) ?? 0)
                }
            }
            if !batch.messages.isEmpty {
                let s = try c.statement(SQLiteBulkCopySQL.insertMessage)
                for m in batch.messages {
                    s.bind(1, m.enqueue.payload)
                    s.bind(2, m.enqueue.deadlineMs)
                    s.bind(3, QueueKeysCodec.encode(m.enqueue.keysIfUndelivered))
                    s.bind(4, QueueKeysCodec.encodeBackoff(m.enqueue.backoffSchedule))
                    s.bind(5, Int64(m.attempts))
                    try s.step()
                    s.reset()
                }
            }
            let s = try c.statement(SQLiteBulkCopySQL.setMarker)
            defer { s.reset() }
            s.bind(1, SQLiteBulkCopySQL.markerKey(batch.progressName))
            s.bind(2, batch.progress)
            try s.step()
            return maxCounter
        }
    }

    public func copyProgress(name: String) throws -> Bytes? {
        try core.withReadConnection { c in
            let s = try c.statement(SQLiteBulkCopySQL.getMarker)
            defer { s.reset() }
            s.bind(1, SQLiteBulkCopySQL.markerKey(name))
            return try s.step() ? s.columnBytes(0) : nil
        }
    }
}
