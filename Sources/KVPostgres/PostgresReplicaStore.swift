// A read-only view of a PostgreSQL hot standby (streaming replication), for
// eventual reads. It runs no writer, sweeper, listener or queue: a standby
// refuses writes, LISTEN and DDL. Snapshot reads use the same SQL as the
// primary's store on a small pool of its own; a sampler thread measures
// replication lag for the
// `ReplicaHealth` capability (the layer above falls back to the primary when
// the standby is unreachable or too far behind).

import KVEngine
import Synchronization
import Threading

public final class PostgresReplicaStore: KVStorage, ReplicaHealth, Sendable {
    public let databaseId: String
    public let location: String
    private let reads: PGReadPool
    private let sampleIntervalMs_: Int
    private struct Sampled {
        var state: ReplicaState
        var counter: UInt64 = 0
        var closed = false
    }
    private let sampled = Mutex(Sampled(state: .unavailable(reason: "not sampled yet")))
    /// The sampler's connection: init's first sample, then the sampler thread's.
    private let samplerSession: PGSession
    private let sampler = DeadlineLoop(name: "kvpostgres-replica-lag", clock: { WallClock.nowMs() })

    /// Does not connect yet: a standby that is down when the daemon starts
    /// is `.unavailable` until the sampler reaches it. `databaseId` is the
    /// primary's; a standby of another database is reported unavailable.
    /// `url` is a libpq URI or key=value string.
    public init(
        url: String, databaseId: String, schema: String = "kvconnectd", readConnections: Int = 4,
        sampleIntervalMs: Int = 250
    ) {
        location = PGMask.mask(url)
        self.databaseId = databaseId
        let connect: @Sendable () throws -> PGConnection = { try PGConnection(conninfo: url, searchPath: schema) }
        reads = PGReadPool(maxConnections: readConnections, connect: connect)
        samplerSession = PGSession(connect: connect)
        sampleIntervalMs_ = max(10, sampleIntervalMs)
        sample()
        // Weak: a store dropped without `close` still goes (its deinit closes).
        let interval = Int64(sampleIntervalMs_)
        do {
            try sampler.start(
                work: { [weak self] in
                    self?.sample()
                    return WallClock.nowMs() + interval
                },
                finish: { [samplerSession] in samplerSession.close() })
        } catch {
            sampled.withLock { $0.state = .unavailable(reason: "no lag sampler: \(error)") }
        }
    }

    deinit { close() }

    // MARK: - ReplicaHealth

    public var replicaState: ReplicaState { sampled.withLock { $0.state } }

    /// Lag as seen on the standby: 0 when everything received is replayed
    /// (an idle primary sends nothing, so the last replayed commit may be
    /// old without the standby being behind), else the age of the last
    /// replayed commit.
    static let lagQuery = """
        SELECT pg_is_in_recovery(),
               COALESCE(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false),
               (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::int8,
               (SELECT counter FROM meta WHERE id = 1),
               (SELECT database_id FROM meta WHERE id = 1)
        """

    func sample() {
        let next: ReplicaState
        var counter: UInt64?
        do {
            let r = try samplerSession.connected().query(Self.lagQuery)
            counter = r.optionalInt64(0, 3).map { UInt64(bitPattern: $0) }
            if r.text(0, 4) != databaseId {
                next = .unavailable(reason: "standby serves database \(r.text(0, 4)), not \(databaseId)")
            } else if !r.bool(0, 0) {
                next = .unavailable(reason: "not a standby (in recovery: false; promoted?)")
            } else if r.bool(0, 1) {
                next = .streaming(lagMs: 0)
            } else {
                next = .streaming(lagMs: max(0, r.optionalInt64(0, 2) ?? Int64.max / 2))
            }
        } catch let e as PGError {
            samplerSession.close()
            next = .unavailable(reason: e.message)
        } catch {
            next = .unavailable(reason: "\(error)")
        }
        sampled.withLock { s in
            s.state = next
            if let counter, counter > s.counter { s.counter = counter }
        }
    }

    // MARK: - KVStorage (reads only)

    public func snapshotRead(_ ranges: [ReadRange], nowMs: Int64?) throws -> [[KVEntry]] {
        try reads.snapshotRead(ranges, nowMs: nowMs ?? WallClock.nowMs())
    }

    public func atomicWrite(
        _ write: AtomicWrite,
        completion: @escaping @Sendable (Result<AtomicWriteResult, KVError>) -> Void
    ) {
        completion(.failure(.internalError("a replica store takes no writes (they go to the primary)")))
    }

    public func checkWritable() -> Bool { false }

    /// Commit counter the standby has replayed (last sample).
    public var currentVersionstamp: Versionstamp {
        Versionstamps.make(counter: sampled.withLock { $0.counter })
    }

    public func close() {
        let wasClosed = sampled.withLock { s in
            defer { s.closed = true }
            return s.closed
        }
        if wasClosed { return }
        sampler.stop()
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
    public func leaseQueueMessage(
        visibilityMs: Int64, waitMs: Int64, max: Int,
        completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void
    ) {
        completion(.failure(.internalError("a replica store has no queue (it is on the primary)")))
    }
    public func ackQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        completion(.failure(.internalError("a replica store has no queue (it is on the primary)")))
    }
    public func failQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void
    ) {
        completion(.failure(.internalError("a replica store has no queue (it is on the primary)")))
    }
    public func queueCounts() throws -> QueueCounts { QueueCounts(ready: 0, inflight: 0) }
    public var queueStats: QueueStats { QueueStats() }
    public var queueRecoveredOnOpen: Int { 0 }

    // `kvconnectd copy` reads from and writes to primaries.
    public func scanEntries(after: Bytes?, limit: Int) throws -> [StoredEntry] {
        throw KVError.internalError("copy from the primary, not from a replica store")
    }
    public func scanQueueMessages(after: Int64?, limit: Int) throws -> [StoredQueueMessage] {
        throw KVError.internalError("copy from the primary, not from a replica store")
    }
    public func importBulk(_ batch: BulkImport) throws {
        throw KVError.internalError("a replica store takes no writes (they go to the primary)")
    }
    public func copyProgress(name: String) throws -> Bytes? { nil }
}
