// The SQLite side of `MutationEvaluator`: one key at a time on the write
// connection, inside the writer's open transaction (SQLite round trips are
// function calls, so no prefetching is needed).

import KVEngine

struct SQLiteWriteTarget: WriteTarget {
    let conn: SQLiteConnection

    func currentVersionstamp(_ key: Bytes, nowMs: Int64) throws -> Versionstamp? {
        let s = try conn.statement(SQL.selectVersionstamp)
        defer { s.reset() }
        s.bind(1, key)
        s.bind(2, nowMs)
        return try s.step() ? s.columnBytes(0) : nil
    }

    func currentValue(_ key: Bytes, nowMs: Int64) throws -> KVValue? {
        let s = try conn.statement(SQL.selectValue)
        defer { s.reset() }
        s.bind(1, key)
        s.bind(2, nowMs)
        guard try s.step() else { return nil }
        let data = s.columnBytes(0)
        let raw = s.columnInt64(1)
        guard let enc = Int32(exactly: raw).flatMap(ValueEncoding.init(rawValue:)) else {
            throw KVError.internalError("The value encoding \(raw) is unknown.")
        }
        return KVValue(data: data, encoding: enc)
    }

    func put(_ key: Bytes, _ value: KVValue, versionstamp: Versionstamp, expireAtMs: Int64?) throws {
        let s = try conn.statement(SQL.upsert)
        defer { s.reset() }
        s.bind(1, key)
        s.bind(2, value.data)
        s.bind(3, Int64(value.encoding.rawValue))
        s.bind(4, versionstamp)
        s.bind(5, expireAtMs)
        try s.step()
    }

    func delete(_ key: Bytes) throws {
        let s = try conn.statement(SQL.delete)
        defer { s.reset() }
        s.bind(1, key)
        try s.step()
    }

    func enqueue(_ e: Enqueue) throws {
        let s = try conn.statement(SQL.insertQueueMessage)
        defer { s.reset() }
        s.bind(1, e.payload)
        s.bind(2, e.deadlineMs)
        s.bind(3, QueueKeysCodec.encode(e.keysIfUndelivered))
        s.bind(4, QueueKeysCodec.encodeBackoff(e.backoffSchedule))
        try s.step()
    }
}

/// The evaluator as the SQLite writer uses it.
typealias WriteEvaluator = MutationEvaluator<SQLiteWriteTarget>

extension MutationEvaluator where Target == SQLiteWriteTarget {
    init(conn: SQLiteConnection, nowMs: Int64) {
        self.init(target: SQLiteWriteTarget(conn: conn), nowMs: nowMs)
    }
}
