// The storage protocol: everything the layers above (KVConnect, the daemon,
// metrics, the console, `copy`) need from a database. SQLite (`KVSQLite`)
// and PostgreSQL (`KVPostgres`) implement it; `MemoryStorage` is a small
// in-process implementation for protocol-layer tests.

import Threading

/// Sizes and counts for metrics and the console.
public struct StorageStats: Sendable, Equatable {
    /// Bytes on disk (SQLite: file + WAL; PostgreSQL: relation sizes).
    public var sizeBytes: Int64
    /// Live entries (may be an estimate on large PostgreSQL tables).
    public var entries: Int64
    public init(sizeBytes: Int64 = 0, entries: Int64 = 0) {
        self.sizeBytes = sizeBytes
        self.entries = entries
    }
}

public protocol KVStorage: AnyObject, Sendable {
    /// Stable id of the database (same from every daemon serving it).
    var databaseId: String { get }
    /// Where the data lives, for logs and `check-config`: a path, or a URI
    /// with its password masked. Never contains a secret.
    var location: String { get }

    /// Reads all ranges from one snapshot. `nowMs` nil means the wall clock
    /// (expired entries are hidden).
    func snapshotRead(_ ranges: [ReadRange], nowMs: Int64?) throws -> [[KVEntry]]

    /// Queues the write for the next group commit. The completion runs once
    /// the write is durable (or failed), on a storage thread: it must not block.
    func atomicWrite(
        _ write: AtomicWrite,
        completion: @escaping @Sendable (Result<AtomicWriteResult, KVError>) -> Void)

    /// True when the database is reachable and a write transaction can start.
    func checkWritable() -> Bool

    /// Versionstamp of the last commit this process knows of.
    var currentVersionstamp: Versionstamp { get }

    /// Drains pending writes (their completions are called), stops background
    /// work and closes connections. Later writes fail with `.unavailable`.
    func close()

    /// Registers interest in `keys`: `onChange` runs after every commit or
    /// expiry sweep (from any process serving the database) that wrote or
    /// deleted one of them. It must only schedule work. Register before the
    /// first read so no change can slip between the read and the registration.
    func watch(keys: [Bytes], onChange: @escaping @Sendable () -> Void) -> KeyWatch

    /// Open watch registrations in this process.
    var watchCount: Int { get }
    /// Expired entries deleted by this process's sweeper since open.
    var expiredEntriesRemoved: Int { get }
    /// Size and entry count.
    func storageStats() throws -> StorageStats

    // MARK: queues

    /// Starts pushing due messages to `deliver` (at most
    /// `options.concurrency` in flight). Pull works with or without it.
    func startQueueDelivery(options: QueuePushOptions, deliver: @escaping QueueDeliverFunction)
    /// Stops pushing; waits up to `drainTimeoutMs` for deliveries in flight.
    /// Returns true if nothing was left in flight.
    @discardableResult
    func stopQueueDelivery(drainTimeoutMs: Int64) -> Bool
    /// Pull: leases up to `max` due messages (oldest deadline first) for
    /// `visibilityMs`, all claimed in one transaction. The first may be waited
    /// for up to `waitMs`; the others are what is due at that moment. Empty
    /// when none became ready in time.
    func leaseQueueMessage(
        visibilityMs: Int64, waitMs: Int64, max: Int,
        completion: @escaping @Sendable (Result<[QueueMessage], KVError>) -> Void)
    func ackQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void)
    func failQueueMessage(
        id: Int64, leaseSeq: Int64,
        completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void)
    /// Ready and in-flight message counts.
    func queueCounts() throws -> QueueCounts
    /// Counters since open (acks, failed attempts, dead letters, expired leases).
    var queueStats: QueueStats { get }
    /// In-flight messages of a dead process made ready again on open.
    var queueRecoveredOnOpen: Int { get }

    // MARK: queue administration
    // For operators (`kvconnectd queue`, `/admin/queue/...`, `/metrics`).
    // Re-driving dead letters needs nothing here: it is an atomic write
    // (check the dead-letter key, delete it, enqueue its value).

    /// Messages by state at `nowMs` (ready = waiting and due).
    func queueOverview(nowMs: Int64) throws -> QueueOverview
    /// One page of messages in id order: up to `limit` with an id greater
    /// than `afterId` (0 for the first page; then the last id seen).
    func listQueueMessages(afterId: Int64, limit: Int, nowMs: Int64) throws -> [QueueMessageInfo]
    /// One message by id; nil if there is none (settled or never existed).
    func queueMessage(id: Int64, nowMs: Int64) throws -> QueueMessageInfo?
    /// Deletes the given messages whatever their state (`ids` nil: all of
    /// them, a purge); nothing is dead-lettered. A later ack or fail of a
    /// deleted in-flight message gets `.notFound`. The completion gets how
    /// many were deleted; it runs on a storage thread and must not block.
    func deleteQueueMessages(ids: [Int64]?, completion: @escaping @Sendable (Result<Int, KVError>) -> Void)
    // MARK: bulk copy (`kvconnectd copy`)

    /// Entries as stored (expired ones included) with keys after `after`
    /// (nil: from the first), in key order, at most `limit`.
    func scanEntries(after: Bytes?, limit: Int) throws -> [StoredEntry]
    /// Queue messages with ids after `after` (nil: from the first), in id order.
    func scanQueueMessages(after: Int64?, limit: Int) throws -> [StoredQueueMessage]
    /// In one transaction: upserts the entries with their versionstamps and
    /// expiry, adds the messages (ready, new ids, attempts kept), raises the
    /// commit counter to at least the largest versionstamp's, and stores the
    /// progress marker. Watchers are not woken: the destination of a copy is
    /// not being served.
    func importBulk(_ batch: BulkImport) throws
    /// The progress marker `importBulk` stored under `name`, nil if none.
    func copyProgress(name: String) throws -> Bytes?
}

/// An entry as stored, for copying between databases.
public struct StoredEntry: Sendable, Equatable {
    public var key: Bytes
    public var value: KVValue
    public var versionstamp: Versionstamp
    /// Unix milliseconds; nil = never expires.
    public var expiresAtMs: Int64?
    public init(key: Bytes, value: KVValue, versionstamp: Versionstamp, expiresAtMs: Int64?) {
        self.key = key
        self.value = value
        self.versionstamp = versionstamp
        self.expiresAtMs = expiresAtMs
    }
}

/// A queue message as stored (one in flight is copied as ready).
public struct StoredQueueMessage: Sendable, Equatable {
    public var id: Int64
    public var enqueue: Enqueue
    /// Failed attempts so far.
    public var attempts: Int
    public init(id: Int64, enqueue: Enqueue, attempts: Int) {
        self.id = id
        self.enqueue = enqueue
        self.attempts = attempts
    }
}

/// One page of a copy and the copy's position after it.
public struct BulkImport: Sendable {
    public var entries: [StoredEntry]
    public var messages: [StoredQueueMessage]
    public var progressName: String
    public var progress: Bytes
    public init(entries: [StoredEntry], messages: [StoredQueueMessage], progressName: String, progress: Bytes) {
        self.entries = entries
        self.messages = messages
        self.progressName = progressName
        self.progress = progress
    }
}

extension KVStorage {
    public func snapshotRead(_ ranges: [ReadRange]) throws -> [[KVEntry]] {
        try snapshotRead(ranges, nowMs: nil)
    }

    /// Current entries of `keys` (nil = absent or expired), from one snapshot.
    public func readKeys(_ keys: [Bytes], nowMs: Int64? = nil) throws -> [KVEntry?] {
        let ranges = keys.map { ReadRange(start: $0, end: $0 + [0x00], limit: 1) }
        return try snapshotRead(ranges, nowMs: nowMs).map { $0.first }
    }

    /// Blocking convenience over `atomicWrite` for commands and tests. Must
    /// not be called from a storage completion handler (it would wait on itself).
    public func atomicWriteSync(_ write: AtomicWrite) throws -> AtomicWriteResult {
        let result = ResultBox<Result<AtomicWriteResult, KVError>>()
        atomicWrite(write) { result.set($0) }
        return try result.wait().get()
    }

    /// Pull one message: `leaseQueueMessage(max: 1)`; nil when none became ready in time.
    public func leaseQueueMessage(
        visibilityMs: Int64, waitMs: Int64,
        completion: @escaping @Sendable (Result<QueueMessage?, KVError>) -> Void
    ) {
        leaseQueueMessage(visibilityMs: visibilityMs, waitMs: waitMs, max: 1) { completion($0.map(\.first)) }
    }

    public func startQueueDelivery(deliver: @escaping QueueDeliverFunction) {
        startQueueDelivery(options: QueuePushOptions(), deliver: deliver)
    }
}
