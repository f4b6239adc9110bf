// The PostgreSQL storage backend: `KVStorage` on one PostgreSQL database
// shared by any number of daemons. Its parts, one per file: the writer
// (group commit), the read pool, the notification listener (watches), the
// sweeper (expiry) and the queue dispatcher, each on its own connection.

import Foundation
import KVEngine
import Logging
import Synchronization

public struct PostgresOptions: Sendable {
    /// PostgreSQL schema holding the tables (created if missing).
    public var schema: String
    /// Size of the pool of read connections.
    public var readConnections: Int
    /// Maximum number of atomic writes per group-commit transaction.
    public var maxBatchSize: Int
    /// How long a write waits for an unreachable PostgreSQL before failing
    /// with `.unavailable`.
    public var unavailableAfterMs: Int64
    /// How long the writer keeps trying to learn the outcome of a COMMIT
    /// whose answer was lost, before answering `.unavailable`.
    public var resolveTimeoutMs: Int64
    /// Commit markers older than this are deleted.
    public var markerRetentionMs: Int64
    /// Poison limit: a message whose this-many-th lease ends without ack or
    /// fail is dead-lettered (0 = no limit), as in SQLite mode.
    public var queueMaxLeases: Int

    public init(
        schema: String = "kvconnectd", readConnections: Int = 4, maxBatchSize: Int = 256,
        unavailableAfterMs: Int64 = 5_000, resolveTimeoutMs: Int64 = 30_000,
        markerRetentionMs: Int64 = 600_000, queueMaxLeases: Int = QueuePoisonLimit.defaultMaxLeases
    ) {
        self.schema = schema
        self.readConnections = readConnections
        self.maxBatchSize = maxBatchSize
        self.unavailableAfterMs = unavailableAfterMs
        self.resolveTimeoutMs = resolveTimeoutMs
        self.markerRetentionMs = markerRetentionMs
        self.queueMaxLeases = queueMaxLeases
    }
}

public final class PostgresStore: KVStorage, Sendable {
    public let databaseId: String
    public let location: String
    let ctx: PGContext
    let writer: PGWriter
    let reads: PGReadPool
    let listener: PGListener
    let sweeper: PGSweeper
    let queue: PGQueue
    private let closed = Mutex(false)

    /// Connects, creates or migrates the schema, and starts the store's
    /// threads. `url` is a libpq connection URI or key=value string. Throws KVError.
    public init(url: String, options: PostgresOptions = PostgresOptions()) throws {
        location = PGMask.mask(url)
        let logger = Logger(label: "kvpostgres")
        let first: PGConnection
        let id: String
        let counter: UInt64
        do {
            first = try PGConnection(conninfo: url, searchPath: options.schema)
            (id, counter) = try PGSchema.migrate(first, schema: options.schema)
        } catch let e as PGError {
            throw e.asKVError
        }
        databaseId = id
        ctx = PGContext(conninfo: url, options: options, counter: counter, logger: logger)
        writer = PGWriter(ctx: ctx, conn: first)
        reads = PGReadPool(maxConnections: options.readConnections) { [ctx] in try ctx.connect() }
        listener = PGListener(ctx: ctx)
        sweeper = PGSweeper(ctx: ctx)
        queue = PGQueue(ctx: ctx)
        let sw = sweeper, q = queue
        ctx.hooks.withLock { h in
            h.expiryNoted = { sw.noteExpiry($0) }
            h.dueNoted = { q.noteDue($0) }
        }
        do {
            try listener.start()
        } catch {
            first.close()
            throw (error as? PGError)?.asKVError ?? KVError.unavailable("\(error)")
        }
        do {
            try writer.start()
            try sweeper.start()
            try queue.start()
        } catch {
            close()
            throw KVError.internalError("\(error)")
        }
    }

    deinit { close() }

    // MARK: - KVStorage

    public func snapshotRead(_ ranges: [ReadRange], nowMs: Int64?) throws -> [[KVEntry]] {
        try reads.snapshotRead(ranges, nowMs: nowMs ?? PGContext.wallClockMs())
    }

    public func atomicWrite(
        _ write: AtomicWrite,
        completion: @escaping @Sendable (Result<AtomicWriteResult, KVError>) -> Void
    ) {
        writer.submit([(write, completion)])
    }

    /// Queues several writes at once so that they land in the same batch. For tests.
    func submitAll(_ writes: [(AtomicWrite, @Sendable (Result<AtomicWriteResult, KVError>) -> Void)]) {
        writer.submit(writes)
    }

    public func checkWritable() -> Bool {
        if closed.withLock({ $0 }) { return false }
        do {
            return try reads.withConnection { c in
                // A primary that accepts writes (not a standby in recovery).
                try !c.query("SELECT pg_is_in_recovery()").bool(0, 0)
            }
        } catch {
            return false
        }
    }

    public var currentVersionstamp: Versionstamp { Versionstamps.make(counter: ctx.counter) }

    public func close() {
        let wasClosed = closed.withLock { c in
            defer { c = true }
            return c
        }
        if wasClosed { return }
        // Each part joins its thread: after this nothing holds the store's parts.
        sweeper.stop()
        queue.stop()
        writer.close()
        listener.stop()
        reads.close()
    }

    public func watch(keys: [Bytes], onChange: @escaping @Sendable () -> Void) -> KeyWatch {
        let w = KeyWatch(keys: keys, onChange: onChange)
        ctx.hub.add(w)
        return w
    }

    public var watchCount: Int { ctx.hub.watchCount }
    public var expiredEntriesRemoved: Int { sweeper.removedCount }

    public func storageStats() throws -> StorageStats {
        try reads.withConnection { c in
            let r = try c.query(PGSQL.stats)
            return StorageStats(sizeBytes: r.int64(0, 0), entries: r.int64(0, 1))
        }
    }

    // MARK: queues

    public func startQueueDelivery(options: QueuePushOptions, deliver: @escaping QueueDeliverFunction) {
        queue.setPush(deliver, options: options)
    }

    @discardableResult
    public func stopQueueDelivery(drainTimeoutMs: Int64) -> Bool {
        queue.setPush(nil, options: QueuePushOptions())
        return queue.waitForPushIdle(timeoutMs: drainTimeoutMs)
    }

    public func leaseQueueMessage(
        visibilityMs: Int64, waitMs: Int64, max: Int,
        completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void
    ) {
        queue.lease(visibilityMs: visibilityMs, waitMs: waitMs, max: max, completion: completion)
    }

    public func ackQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        queue.settle(id: id, leaseSeq: leaseSeq, success: true, completion: completion)
    }

    public func failQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        queue.settle(id: id, leaseSeq: leaseSeq, success: false, completion: completion)
    }

    public func queueCounts() throws -> QueueCounts {
        try reads.withConnection { c in PGQueue.counts(try c.query(PGQueue.countsSQL)) }
    }
    public var queueStats: QueueStats { queue.stats }
    public var queueRecoveredOnOpen: Int { queue.recoveredOnOpen }

    // MARK: - for tests and operations

    /// Group-commit transactions committed by this store.
    public var batchesCommitted: Int { ctx.batchesCommitted }
    /// COMMITs whose answer was lost with the connection, by what the commit
    /// marker showed after reconnecting.
    public var unknownOutcomes: (committed: Int, rolledBack: Int) { writer.unknownOutcomes }
    /// Server process id of the writer's connection.
    public var writerBackendPID: Int32 { writer.backendPID }
    /// Whether the LISTEN connection is up, and how often it was re-established.
    public var notificationsConnected: Bool { listener.isConnected }
    public var notificationReconnects: Int { listener.reconnects }
}
