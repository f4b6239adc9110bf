// A read-only view of a PostgreSQL hot standby (streaming replication), for
// eventual reads. It runs no writer, sweeper, listener or queue: a standby
// refuses writes, LISTEN and DDL. Snapshot reads use the same pool and SQL as
// the primary's store; a sampler thread measures replication lag for the
// `ReplicaHealth` capability (the layer above falls back to the primary when
// the standby is unreachable or too far behind).

import Foundation
import KVEngine
import Logging

public final class PostgresReplicaStore: KVStorage, ReplicaHealth, @unchecked Sendable {
    public let databaseId: String
    public let location: String
    let ctx: PGContext
    let reads: PGReadPool
    private let sampleIntervalMs: Int
    private let lock = NSLock()
    private var state: ReplicaState
    private var closed = false
    private let stopped = DispatchSemaphore(value: 0)

    /// Connects to the standby and reads the database id the primary created
    /// (the schema must exist: the primary's store creates it). `url` is a
    /// libpq URI or key=value string. Throws KVError.
    public init(url: String, options: PostgresOptions = PostgresOptions(), sampleIntervalMs: Int = 250) throws {
        location = PGMask.mask(url)
        self.sampleIntervalMs = max(10, sampleIntervalMs)
        let logger = Logger(label: "kvpostgres.replica")
        let id: String
        let counter: UInt64
        do {
            let c = try PGConnection(conninfo: url, searchPath: options.schema)
            defer { c.close() }
            let q = PGConnection.quoteIdentifier(options.schema)
            let m = try c.query("SELECT database_id, counter FROM \(q).meta WHERE id = 1")
            guard m.rowCount == 1 else {
                throw KVError.unavailable("replica \(PGMask.mask(url)) has no kvconnectd schema yet: start the primary's daemon first")
            }
            (id, counter) = (m.text(0, 0), UInt64(bitPattern: m.int64(0, 1)))
        } catch let e as PGError {
            throw e.asKVError
        }
        databaseId = id
        state = .streaming(lagMs: 0)
        ctx = PGContext(conninfo: url, options: options, counter: counter, logger: logger)
        reads = PGReadPool(ctx: ctx, maxConnections: options.readConnections)
        sample()
        let t = Thread { [weak self] in self?.samplerLoop() }
        t.name = "kvpostgres-replica-lag"
        t.start()
    }

    deinit { close() }

    // MARK: - ReplicaHealth

    public var replicaState: ReplicaState {
        lock.lock()
        defer { lock.unlock() }
        return state
    }

    /// Lag as seen on the standby: 0 when everything received is replayed
    /// (an idle primary sends nothing, so the last replayed commit may be
    /// old without the standby being behind), else the age of the last
    /// replayed commit.
    static let lagQuery = """
        SELECT pg_is_in_recovery(),
               COALESCE(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false),
               (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::int8,
               (SELECT counter FROM meta WHERE id = 1)
        """

    private var samplerConn: PGConnection?

    func sample() {
        let next: ReplicaState
        var counter: UInt64?
        do {
            if samplerConn == nil { samplerConn = try ctx.connect() }
            let r = try samplerConn!.query(Self.lagQuery)
            counter = UInt64(bitPattern: r.int64(0, 3))
            if !r.bool(0, 0) {
                next = .unavailable(reason: "not a standby (in recovery: false; promoted?)")
            } else if r.bool(0, 1) {
                next = .streaming(lagMs: 0)
            } else {
                next = .streaming(lagMs: max(0, r.optionalInt64(0, 2) ?? Int64.max / 2))
            }
        } catch let e as PGError {
            samplerConn?.close()
            samplerConn = nil
            next = .unavailable(reason: e.message)
        } catch {
            next = .unavailable(reason: "\(error)")
        }
        lock.lock()
        state = next
        lock.unlock()
        if let counter { ctx.noteCounter(counter) }
    }

    private func samplerLoop() {
        while true {
            lock.lock()
            let stop = closed
            lock.unlock()
            if stop { break }
            sample()
            usleep(UInt32(sampleIntervalMs) * 1000)
        }
        samplerConn?.close()
        samplerConn = nil
        stopped.signal()
    }

    // MARK: - KVStorage (reads only)

    public func snapshotRead(_ ranges: [ReadRange], nowMs: Int64?) throws -> [[KVEntry]] {
        try reads.snapshotRead(ranges, nowMs: nowMs ?? PGContext.wallClockMs())
    }

    public func atomicWrite(_ write: AtomicWrite,
                            completion: @escaping @Sendable (Result<AtomicWriteResult, KVError>) -> Void) {
        completion(.failure(.internalError("a replica store takes no writes (they go to the primary)")))
    }

    public func checkWritable() -> Bool { false }

    /// Commit counter the standby has replayed (last sample).
    public var currentVersionstamp: Versionstamp { Versionstamps.make(counter: ctx.counter) }

    public func close() {
        lock.lock()
        if closed { lock.unlock(); return }
        closed = true
        lock.unlock()
        stopped.wait()
        reads.close()
    }

    /// Watches go to the primary; a registration here never fires.
    public func watch(keys: [Bytes], onChange: @escaping @Sendable () -> Void) -> KeyWatch {
        KeyWatch(keys: keys, onChange: onChange)
    }

    public var watchCount: Int { 0 }
    public var expiredEntriesRemoved: Int { 0 }

    public func storageStats() throws -> StorageStats {
        try reads.withConnection { c in
            let r = try c.query(PGSQL.stats)
            return StorageStats(sizeBytes: r.int64(0, 0), entries: r.int64(0, 1))
        }
    }

    // Queues live on the primary.
    public func startQueueDelivery(options: QueuePushOptions, deliver: @escaping QueueDeliverFunction) {}
    public func stopQueueDelivery(drainTimeoutMs: Int64) -> Bool { true }
    public func leaseQueueMessage(visibilityMs: Int64, waitMs: Int64,
                                  completion: @escaping @Sendable (Result<QueueMessage?, KVError>) -> Void) {
        completion(.failure(.internalError("a replica store has no queue (it is on the primary)")))
    }
    public func ackQueueMessage(id: Int64, leaseSeq: Int64,
                                completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void) {
        completion(.failure(.internalError("a replica store has no queue (it is on the primary)")))
    }
    public func failQueueMessage(id: Int64, leaseSeq: Int64,
                                 completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void) {
        completion(.failure(.internalError("a replica store has no queue (it is on the primary)")))
    }
    public func queueCounts() throws -> QueueCounts { QueueCounts(ready: 0, inflight: 0) }
    public var queueStats: QueueStats { QueueStats() }
    public var queueRecoveredOnOpen: Int { 0 }
}
