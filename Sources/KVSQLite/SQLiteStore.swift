// The embedded backend: SQLite in WAL mode, one writer thread doing group
// commit, a pool of read-only connections for snapshot reads.

import CSQLite
import Foundation
import KVEngine
import Logging
import Threading

public struct SQLiteStoreOptions: Sendable {
    /// PRAGMA synchronous=FULL (default) vs NORMAL.
    public var synchronousFull: Bool = true
    /// Size of the pool of read-only connections.
    public var readConnections: Int = 4
    /// Maximum number of atomic writes per group-commit transaction.
    public var maxBatchSize: Int = 256
    /// Poison limit: a queue message whose this-many-th lease ends without
    /// ack or fail is dead-lettered; 0 = no limit (`queue_max_leases`).
    public var queueMaxLeases: Int = QueuePoisonLimit.defaultMaxLeases

    public init(
        synchronousFull: Bool = true, readConnections: Int = 4, maxBatchSize: Int = 256,
        queueMaxLeases: Int = QueuePoisonLimit.defaultMaxLeases
    ) {
        self.synchronousFull = synchronousFull
        self.readConnections = readConnections
        self.maxBatchSize = maxBatchSize
        self.queueMaxLeases = queueMaxLeases
    }
}

public final class SQLiteStore: KVStorage, Sendable {
    /// Lower-case UUID generated when the database file was created; stable across reopen.
    public let databaseId: String
    public let path: String
    public var location: String { path }
    let core: StoreCore

    /// Opens (creating or migrating) the database and starts the writer thread.
    /// Throws KVError.
    public init(path: String, options: SQLiteStoreOptions = SQLiteStoreOptions()) throws {
        self.path = path
        do {
            core = try StoreCore(path: path, options: options)
        } catch {
            throw error.asKVError
        }
        databaseId = core.databaseId
    }

    deinit { core.close() }

    /// Reads all ranges from one snapshot. `nowMs` nil means the wall clock.
    public func snapshotRead(_ ranges: [ReadRange], nowMs: Int64?) throws -> [[KVEntry]] {
        try core.snapshotRead(ranges, nowMs: nowMs ?? StoreCore.wallClockMs())
    }

    /// Queues the write for the next group commit. The completion runs on the
    /// writer thread once the batch is durable (or failed).
    public func atomicWrite(
        _ write: AtomicWrite,
        completion: @escaping @Sendable (Result<AtomicWriteResult, KVError>) -> Void
    ) {
        core.submit(write, completion: completion)
    }

    /// Blocking convenience over `atomicWrite`. Throws KVError. Must not be
    /// called from a completion handler (that runs on the writer thread).
    public func atomicWriteSync(_ write: AtomicWrite) throws -> AtomicWriteResult {
        if core.isWriterThread {
            throw KVError.internalError("atomicWriteSync called on the writer thread")
        }
        let box = ResultBox<Result<AtomicWriteResult, KVError>>()
        atomicWrite(write) { box.set($0) }
        return try box.wait().get()
    }

    /// True when the database is open and a write transaction can be started.
    public func checkWritable() -> Bool { core.checkWritable() }

    /// Versionstamp of the last commit.
    public var currentVersionstamp: Versionstamp { Versionstamps.make(counter: core.committedCounter) }

    /// Drains pending writes (their completions are called), stops the writer
    /// and closes all connections. Later writes fail with .unavailable.
    public func close() { core.close() }

    /// Number of persisted enqueued messages.
    public func queuedMessageCount() throws -> Int { try core.queuedMessageCount() }

    // MARK: watch and expiry

    /// Registers interest in `keys`: `onChange` runs (on the writer thread;
    /// it must only schedule work) after every commit or expiry sweep that
    /// wrote or deleted one of them. Register before the first read so no
    /// change can slip between the read and the registration.
    public func watch(keys: [Bytes], onChange: @escaping @Sendable () -> Void) -> KeyWatch {
        let w = KeyWatch(keys: keys, onChange: onChange)
        core.hub.add(w)
        return w
    }

    /// Open watch registrations (for tests and metrics).
    public var watchCount: Int { core.hub.watchCount }

    /// Expired entries deleted by the sweeper since open.
    public var expiredEntriesRemoved: Int { core.sweeper.removedCount }

    /// File + WAL size and the number of stored entries (expired ones not yet
    /// swept included).
    public func storageStats() throws -> StorageStats {
        func size(_ p: String) -> Int64 {
            ((try? FileManager.default.attributesOfItem(atPath: p))?[.size] as? NSNumber)?.int64Value ?? 0
        }
        return StorageStats(sizeBytes: size(path) + size(path + "-wal"), entries: try core.entryCount())
    }
}

// MARK: - queues

extension SQLiteStore {
    /// Starts pushing due messages to `deliver` with at most
    /// `options.concurrency` deliveries in flight. Without it, messages are
    /// only handed out by `leaseQueueMessage` (pull). Pull works either way:
    /// both take ready messages through the same atomic claim.
    public func startQueueDelivery(
        options: QueuePushOptions,
        deliver: @escaping QueueDeliverFunction
    ) {
        core.queue.setPush(deliver, options: options)
    }

    /// Stops pushing and waits up to `drainTimeoutMs` for deliveries in
    /// flight to report back. Messages still in flight stay so in the
    /// database and are ready again after their lease or the next open.
    /// Returns true if nothing was left in flight.
    @discardableResult
    public func stopQueueDelivery(drainTimeoutMs: Int64 = 5000) -> Bool {
        core.queue.setPush(nil, options: QueuePushOptions())
        return core.queue.waitForPushIdle(timeoutMs: drainTimeoutMs)
    }

    /// Pull: leases up to `max` due ready messages for `visibilityMs` in one
    /// claim, waiting up to `waitMs` for the first. Completes with none when
    /// nothing became ready in time. The completion runs on the queue or
    /// writer thread; it must not block.
    public func leaseQueueMessage(
        visibilityMs: Int64, waitMs: Int64, max: Int,
        completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void
    ) {
        core.queue.lease(visibilityMs: visibilityMs, waitMs: waitMs, max: max, completion: completion)
    }

    /// Acknowledges a lease: the message is deleted.
    public func ackQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        core.queue.settle(id: id, leaseSeq: leaseSeq, success: true, completion: completion)
    }

    /// Reports a failed attempt: retried after the next delay of the
    /// message's backoff schedule, or dead-lettered when it is exhausted.
    public func failQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        core.queue.settle(id: id, leaseSeq: leaseSeq, success: false, completion: completion)
    }

    /// Ready and in-flight message counts.
    public func queueCounts() throws -> QueueCounts {
        try core.queueCounts()
    }

    /// Counters since open (acks, failed attempts, dead letters, expired leases).
    public var queueStats: QueueStats { core.queue.stats }

    /// In-flight messages of a previous process made ready again on open.
    public var queueRecoveredOnOpen: Int { core.recoveredInflight }

    // MARK: queue administration

    public func queueOverview(nowMs: Int64) throws -> QueueOverview {
        try core.read { c in try QueueStore.overview(c, nowMs: nowMs) }
    }

    public func listQueueMessages(afterId: Int64, limit: Int, nowMs: Int64) throws -> [QueueMessageInfo] {
        try core.read { c in try QueueStore.list(c, afterId: afterId, limit: limit, nowMs: nowMs) }
    }

    public func queueMessage(id: Int64, nowMs: Int64) throws -> QueueMessageInfo? {
        try core.read { c in try QueueStore.get(c, id: id, nowMs: nowMs) }
    }

    /// On the writer thread, so it serializes with claims and settles.
    public func deleteQueueMessages(ids: [Int64]?, completion: @escaping @Sendable (Result<Int, KVError>) -> Void) {
        let queued = core.onWriter { c in
            do {
                try c.run("BEGIN IMMEDIATE")
                let n = try QueueStore.delete(c, ids: ids)
                try c.run("COMMIT")
                completion(.success(n))
            } catch {
                if !c.isAutocommit { try? c.run("ROLLBACK") }
                completion(.failure(error.asKVError))
            }
        }
        if !queued { completion(.failure(.unavailable("shutting down"))) }
    }
}
