// Queue administration on PostgreSQL (`kvconnectd queue`, `/admin/queue/...`,
// `/metrics`): the same answers as SQLite mode, from the shared table, so any
// daemon sees every daemon's messages. Reads use the read pool; deletes are
// one statement each and wake nobody (a deleted in-flight message's later
// ack or fail gets `.notFound`, as in SQLite mode).

import Foundation
import KVEngine

enum PGQueueAdminSQL {
    static let overview = """
        SELECT count(*) FILTER (WHERE state = 'ready' AND deadline_ms <= $1),
               count(*) FILTER (WHERE state = 'ready' AND deadline_ms > $1),
               count(*) FILTER (WHERE state = 'inflight'),
               min(deadline_ms) FILTER (WHERE state = 'ready')
        FROM queue_messages
        """
    static let columns =
        "id, state, attempts, deadline_ms, lease_until_ms, lease_seq, payload, keys_if_undelivered, backoff_schedule"
    static let page = "SELECT \(columns) FROM queue_messages WHERE id > $1 ORDER BY id LIMIT $2"
    static let one = "SELECT \(columns) FROM queue_messages WHERE id = $1"
    static let deleteSome = "DELETE FROM queue_messages WHERE id = ANY($1) RETURNING 1"
    static let deleteAll = "DELETE FROM queue_messages RETURNING 1"
}

extension PostgresStore {
    public func queueOverview(nowMs: Int64) throws -> QueueOverview {
        try reads.withConnection { c in
            let r = try c.query(PGQueueAdminSQL.overview, [.int8(nowMs)])
            return QueueOverview(
                ready: Int(r.int64(0, 0)), delayed: Int(r.int64(0, 1)), inflight: Int(r.int64(0, 2)),
                oldestDueMs: r.optionalInt64(0, 3))
        }
    }

    public func listQueueMessages(afterId: Int64, limit: Int, nowMs: Int64) throws -> [QueueMessageInfo] {
        try reads.withConnection { c in
            let r = try c.query(PGQueueAdminSQL.page, [.int8(afterId), .int8(Int64(max(0, limit)))])
            return try (0..<r.rowCount).map { try Self.info(r, $0, nowMs: nowMs) }
        }
    }

    public func queueMessage(id: Int64, nowMs: Int64) throws -> QueueMessageInfo? {
        try reads.withConnection { c in
            let r = try c.query(PGQueueAdminSQL.one, [.int8(id)])
            return r.rowCount == 0 ? nil : try Self.info(r, 0, nowMs: nowMs)
        }
    }

    public func deleteQueueMessages(ids: [Int64]?, completion: @escaping @Sendable (Result<Int, KVError>) -> Void) {
        do {
            let n = try reads.withConnection { c in
                let r =
                    try ids.map { try c.query(PGQueueAdminSQL.deleteSome, [.int8Array($0.map { Optional($0) })]) }
                    ?? c.query(PGQueueAdminSQL.deleteAll)
                return r.rowCount
            }
            completion(.success(n))
        } catch {
            completion(.failure((error as? KVError) ?? ((error as? PGError)?.asKVError ?? .internalError("\(error)"))))
        }
    }

    static func info(_ r: PGResult, _ i: Int, nowMs: Int64) throws -> QueueMessageInfo {
        let inflight = r.text(i, 1) == "inflight"
        let deadline = r.int64(i, 3)
        guard let keys = QueueKeysCodec.decode(r.bytes(i, 7)),
            let backoff = QueueKeysCodec.decodeBackoff(r.text(i, 8))
        else {
            throw KVError.internalError("queue message \(r.int64(i, 0)) has malformed keys or backoff schedule")
        }
        return QueueMessageInfo(
            id: r.int64(i, 0), state: inflight ? .inflight : (deadline <= nowMs ? .ready : .delayed),
            attempt: Int(r.int64(i, 2)) + 1, deadlineMs: deadline,
            leaseUntilMs: inflight ? r.optionalInt64(i, 4) : nil, leases: r.int64(i, 5),
            payload: r.bytes(i, 6), keysIfUndelivered: keys, backoffSchedule: backoff)
    }
}

// A standby holds no queue of its own to steer: the queue lives on the primary.
extension PostgresReplicaStore {
    public func queueOverview(nowMs: Int64) throws -> QueueOverview { QueueOverview() }
    public func listQueueMessages(afterId: Int64, limit: Int, nowMs: Int64) throws -> [QueueMessageInfo] { [] }
    public func queueMessage(id: Int64, nowMs: Int64) throws -> QueueMessageInfo? { nil }
    public func deleteQueueMessages(ids: [Int64]?, completion: @escaping @Sendable (Result<Int, KVError>) -> Void) {
        completion(.failure(.internalError("a replica store has no queue (it is on the primary)")))
    }
}
