// The storage engine: SQLite in WAL mode, one writer thread doing group
// commit, a pool of read-only connections for snapshot reads.

import CSQLite
import Foundation
import Logging

public struct KVStoreOptions: Sendable {
    /// PRAGMA synchronous=FULL (default) vs NORMAL.
    public var synchronousFull: Bool = true
    /// Size of the pool of read-only connections.
    public var readConnections: Int = 4
    /// Maximum number of atomic writes per group-commit transaction.
    public var maxBatchSize: Int = 256

    public init(synchronousFull: Bool = true, readConnections: Int = 4, maxBatchSize: Int = 256) {
        self.synchronousFull = synchronousFull
        self.readConnections = readConnections
        self.maxBatchSize = maxBatchSize
    }
}

public final class KVStore: @unchecked Sendable {
    /// Lower-case UUID generated when the database file was created; stable across reopen.
    public let databaseId: String
    public let path: String
    let core: StoreCore

    /// Opens (creating or migrating) the database and starts the writer thread.
    /// Throws KVError.
    public init(path: String, options: KVStoreOptions = KVStoreOptions()) throws {
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
    public func snapshotRead(_ ranges: [ReadRange], nowMs: Int64? = nil) throws -> [[KVEntry]] {
        try core.snapshotRead(ranges, nowMs: nowMs ?? StoreCore.wallClockMs())
    }

    /// Queues the write for the next group commit. The completion runs on the
    /// writer thread once the batch is durable (or failed).
    public func atomicWrite(_ write: AtomicWrite,
                            completion: @escaping @Sendable (Result<AtomicWriteResult, KVError>) -> Void) {
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

    /// Current entries of `keys` (nil = absent or expired), from one snapshot.
    public func readKeys(_ keys: [Bytes], nowMs: Int64? = nil) throws -> [KVEntry?] {
        let ranges = keys.map { ReadRange(start: $0, end: $0 + [0x00], limit: 1) }
        return try snapshotRead(ranges, nowMs: nowMs).map { $0.first }
    }

    /// Open watch registrations (for tests and metrics).
    public var watchCount: Int { core.hub.watchCount }

    /// Expired entries deleted by the sweeper since open.
    public var expiredEntriesRemoved: Int { core.sweeper.removedCount }
}

/// One-shot value handoff between threads.
final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let cond = NSCondition()
    private var value: T?

    func set(_ v: T) {
        cond.lock()
        value = v
        cond.broadcast()
        cond.unlock()
    }

    func wait() -> T {
        cond.lock()
        defer { cond.unlock() }
        while value == nil { cond.wait() }
        return value!
    }

    func wait(until deadline: Date) -> T? {
        cond.lock()
        defer { cond.unlock() }
        while value == nil {
            if !cond.wait(until: deadline) { break }
        }
        return value
    }
}

/// Pool of read-only connections; each is lent to one thread at a time.
final class ReadPool: @unchecked Sendable {
    private let cond = NSCondition()
    private var idle: [SQLiteConnection] = []
    private var total = 0
    private let maxConnections: Int
    private var closed = false
    private let path: String

    init(path: String, maxConnections: Int) {
        self.path = path
        self.maxConnections = Swift.max(1, maxConnections)
    }

    private func open() throws -> SQLiteConnection {
        let c = try SQLiteConnection(path: path, flags: SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX)
        c.persistWAL()  // whichever connection closes last keeps the -shm (see SQLiteConnection.persistWAL)
        try c.execScript("PRAGMA busy_timeout = 5000;")
        return c
    }

    func withConnection<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        cond.lock()
        while idle.isEmpty && !closed && total >= maxConnections { cond.wait() }
        if closed {
            cond.unlock()
            throw KVError.unavailable("shutting down")
        }
        var conn = idle.popLast()
        if conn == nil { total += 1 }
        cond.unlock()

        if conn == nil {
            do {
                conn = try open()
            } catch {
                cond.lock()
                total -= 1
                cond.signal()
                cond.unlock()
                throw error
            }
        }
        let c = conn!
        defer {
            cond.lock()
            if closed {
                c.close()
                total -= 1
            } else {
                idle.append(c)
            }
            cond.signal()
            cond.unlock()
        }
        return try body(c)
    }

    func close() {
        cond.lock()
        closed = true
        for c in idle { c.close() }
        total -= idle.count
        idle.removeAll()
        cond.broadcast()
        cond.unlock()
    }
}

final class StoreCore: @unchecked Sendable {
    private struct PendingWrite {
        let write: AtomicWrite
        let completion: @Sendable (Result<AtomicWriteResult, KVError>) -> Void
    }

    let databaseId: String
    private let options: KVStoreOptions
    private let logger = Logger(label: "kvengine")

    /// Owned by the writer thread after init.
    private let writeConn: SQLiteConnection
    /// Writer-thread-only: keys changed by the last committed batch.
    private var pendingNotifications: [Bytes] = []
    /// Writer-thread-only copy of the counter (last committed).
    private var writerCounter: UInt64
    private let readPool: ReadPool

    // Guarded by `cond`.
    private let cond = NSCondition()
    private var pending: [PendingWrite] = []
    /// Jobs to run on the writer thread (with the write connection) between batches.
    private var tasks: [@Sendable (SQLiteConnection) -> Void] = []
    private var closing = false
    private var writerFinished = false
    private var writerThread: Thread?

    let hub = WatchHub()
    private(set) var sweeper: ExpirySweeper!
    private(set) var queue: QueueDispatcher!
    /// In-flight queue messages of a previous process made ready again on open.
    private(set) var recoveredInflight = 0

    private let counterLock = NSLock()
    private var _committedCounter: UInt64
    private var _batchesCommitted = 0

    /// Number of group-commit transactions committed so far (for tests and metrics).
    var batchesCommitted: Int {
        counterLock.lock()
        defer { counterLock.unlock() }
        return _batchesCommitted
    }

    var committedCounter: UInt64 {
        counterLock.lock()
        defer { counterLock.unlock() }
        return _committedCounter
    }

    static func wallClockMs() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }

    init(path: String, options: KVStoreOptions) throws {
        self.options = options
        let conn = try SQLiteConnection(path: path,
                                        flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX)
        conn.persistWAL()
        do {
            try conn.execScript("PRAGMA busy_timeout = 5000;")
            let mode = try conn.queryText("PRAGMA journal_mode = WAL")
            if mode?.lowercased() != "wal" {
                throw KVError.internalError("could not enable WAL mode (journal_mode=\(mode ?? "?"))")
            }
            try conn.execScript("PRAGMA synchronous = \(options.synchronousFull ? "FULL" : "NORMAL");")
            let (id, counter) = try Schema.migrate(conn)
            // At-least-once: whatever a dead process had in flight is ready again.
            recoveredInflight = try QueueStore.recoverInflight(conn)
            databaseId = id
            writerCounter = counter
            _committedCounter = counter
        } catch {
            conn.close()
            throw error
        }
        writeConn = conn
        readPool = ReadPool(path: path, maxConnections: options.readConnections)

        let thread = Thread { [self] in
            Thread.current.name = "kvengine-writer"
            self.writerLoop()
        }
        thread.name = "kvengine-writer"
        cond.lock()
        writerThread = thread
        cond.unlock()
        thread.start()
        sweeper = ExpirySweeper(core: self)
        sweeper.start()
        queue = QueueDispatcher(core: self)
        queue.start()
        if recoveredInflight > 0 {
            logger.notice("queue: \(recoveredInflight) in-flight message(s) of a previous run are ready again")
        }
    }

    /// Writer thread, after a sweep committed.
    func didSweep(_ removed: [Bytes]) {
        if removed.isEmpty { return }
        sweeper.addRemoved(removed.count)
        hub.notify(changed: removed)
    }

    // MARK: - reads

    func snapshotRead(_ ranges: [ReadRange], nowMs: Int64) throws -> [[KVEntry]] {
        do {
            return try readPool.withConnection { c in
                // One statement is its own snapshot; several need a transaction.
                if ranges.count == 1 { return [try readRange(c, ranges[0], nowMs: nowMs)] }
                try c.run("BEGIN")
                do {
                    var out: [[KVEntry]] = []
                    out.reserveCapacity(ranges.count)
                    for r in ranges {
                        out.append(try readRange(c, r, nowMs: nowMs))
                    }
                    try c.run("COMMIT")
                    return out
                } catch {
                    if !c.isAutocommit { try? c.run("ROLLBACK") }
                    throw error
                }
            }
        } catch {
            throw error.asKVError
        }
    }

    private func readRange(_ c: SQLiteConnection, _ r: ReadRange, nowMs: Int64) throws -> [KVEntry] {
        guard r.limit > 0 else { return [] }
        let s = try c.statement(r.reverse ? SQL.rangeDesc : SQL.rangeAsc)
        defer { s.reset() }
        s.bind(1, r.start)
        s.bind(2, r.end)
        s.bind(3, nowMs)
        s.bind(4, Int64(r.limit))
        var entries: [KVEntry] = []
        entries.reserveCapacity(Swift.min(r.limit, 256))
        while try s.step() {
            let raw = s.columnInt64(2)
            guard let enc = Int32(exactly: raw).flatMap(ValueEncoding.init(rawValue:)) else {
                throw KVError.internalError("The value encoding \(raw) is unknown.")
            }
            entries.append(KVEntry(key: s.columnBytes(0),
                                   value: KVValue(data: s.columnBytes(1), encoding: enc),
                                   versionstamp: s.columnBytes(3)))
        }
        return entries
    }

    func queuedMessageCount() throws -> Int {
        do {
            return try readPool.withConnection { c in
                let s = try c.statement(SQL.countQueue)
                defer { s.reset() }
                guard try s.step() else { return 0 }
                return Int(s.columnInt64(0))
            }
        } catch {
            throw error.asKVError
        }
    }

    func queueCounts() throws -> QueueCounts {
        do {
            return try readPool.withConnection { c in try QueueStore.counts(c) }
        } catch {
            throw error.asKVError
        }
    }

    // MARK: - writes

    func submit(_ write: AtomicWrite, completion: @escaping @Sendable (Result<AtomicWriteResult, KVError>) -> Void) {
        cond.lock()
        if closing {
            cond.unlock()
            completion(.failure(.unavailable("shutting down")))
            return
        }
        pending.append(PendingWrite(write: write, completion: completion))
        cond.signal()
        cond.unlock()
    }

    /// Queues several writes at once so that they land in the same batch
    /// (when they fit in maxBatchSize). Used by tests.
    func submitAll(_ writes: [(AtomicWrite, @Sendable (Result<AtomicWriteResult, KVError>) -> Void)]) {
        cond.lock()
        if closing {
            cond.unlock()
            for (_, c) in writes { c(.failure(.unavailable("shutting down"))) }
            return
        }
        for (w, c) in writes { pending.append(PendingWrite(write: w, completion: c)) }
        cond.signal()
        cond.unlock()
    }

    /// Runs `body` on the writer thread between batches; false if shutting down.
    @discardableResult
    func onWriter(_ body: @escaping @Sendable (SQLiteConnection) -> Void) -> Bool {
        cond.lock()
        defer { cond.unlock() }
        if closing { return false }
        tasks.append(body)
        cond.signal()
        return true
    }

    func checkWritable() -> Bool {
        let box = ResultBox<Bool>()
        let logger = self.logger
        let queued = onWriter { conn in
            do {
                try conn.run("BEGIN IMMEDIATE")
                try conn.run("ROLLBACK")
                box.set(true)
            } catch {
                if !conn.isAutocommit { try? conn.run("ROLLBACK") }
                logger.warning("write probe failed: \(error)")
                box.set(false)
            }
        }
        guard queued else { return false }
        return box.wait(until: Date().addingTimeInterval(5)) ?? false
    }

    var isWriterThread: Bool {
        cond.lock()
        defer { cond.unlock() }
        return Thread.current === writerThread
    }

    func close() {
        sweeper?.stop()
        queue?.stop()
        cond.lock()
        closing = true
        cond.broadcast()
        let onWriter = Thread.current === writerThread
        if !onWriter {
            while !writerFinished { cond.wait() }
            // The Thread keeps its closure, which holds self: break the cycle.
            writerThread = nil
        }
        cond.unlock()
        readPool.close()
    }

    private func writerLoop() {
        let batchLimit = Swift.max(1, options.maxBatchSize)
        while true {
            cond.lock()
            while pending.isEmpty && tasks.isEmpty && !closing { cond.wait() }
            if pending.isEmpty && tasks.isEmpty {
                cond.unlock()
                break  // closing and drained
            }
            let tasksNow = tasks
            tasks.removeAll()
            let n = Swift.min(pending.count, batchLimit)
            let batch = Array(pending.prefix(n))
            pending.removeFirst(n)
            cond.unlock()

            for t in tasksNow { t(writeConn) }
            if !batch.isEmpty {
                let results = processBatch(batch.map(\.write))
                // Before the replies, so an acknowledged write has already
                // woken its watchers (they only schedule a read here).
                if !pendingNotifications.isEmpty {
                    hub.notify(changed: pendingNotifications)
                    pendingNotifications = []
                }
                for (p, r) in zip(batch, results) { p.completion(r) }
            }
        }
        writeConn.close()
        cond.lock()
        writerFinished = true
        cond.broadcast()
        cond.unlock()
    }

    /// Writer thread only (from an `onWriter` task): runs `body` in its own
    /// transaction as one commit with the next versionstamp from the same
    /// counter as atomic writes, then wakes the watchers of the keys it
    /// touched. Nothing changes if `body` or the commit throws.
    func commitVersionstamped(_ conn: SQLiteConnection,
                              _ body: (WriteEvaluator, Versionstamp) throws -> Void) throws -> Versionstamp {
        precondition(conn === writeConn)
        let eval = WriteEvaluator(conn: conn, nowMs: Self.wallClockMs())
        let counter = writerCounter + 1
        let versionstamp = Versionstamps.make(counter: counter)
        try conn.run("BEGIN IMMEDIATE")
        do {
            try body(eval, versionstamp)
            try storeCounter(conn, counter)
            try conn.run("COMMIT")
        } catch {
            if !conn.isAutocommit { try? conn.run("ROLLBACK") }
            throw error
        }
        writerCounter = counter
        counterLock.lock()
        _committedCounter = counter
        _batchesCommitted += 1
        counterLock.unlock()
        if let e = eval.effects.earliestExpiryMs { sweeper.noteExpiry(e) }
        hub.notify(changed: eval.effects.touched)
        return versionstamp
    }

    /// Persists the versionstamp counter inside the open write transaction.
    private func storeCounter(_ conn: SQLiteConnection, _ counter: UInt64) throws {
        let s = try conn.statement(SQL.updateCounter)
        defer { s.reset() }
        s.bind(1, Int64(bitPattern: counter))
        try s.step()
    }

    /// Runs one group-commit transaction; returns one result per write.
    /// Nothing is reported committed unless COMMIT succeeded.
    func processBatch(_ writes: [AtomicWrite]) -> [Result<AtomicWriteResult, KVError>] {
        let metricsStart = EngineMetrics.now()
        let conn = writeConn
        let eval = WriteEvaluator(conn: conn, nowMs: Self.wallClockMs())
        func failAll(_ error: Error) -> [Result<AtomicWriteResult, KVError>] {
            if !conn.isAutocommit { try? conn.run("ROLLBACK") }
            let e = error.asKVError
            logger.error("batch of \(writes.count) write(s) failed: \(error)")
            return Array(repeating: .failure(e), count: writes.count)
        }

        do {
            try conn.run("BEGIN IMMEDIATE")
        } catch {
            return failAll(error)
        }

        var counter = writerCounter
        var results: [Result<AtomicWriteResult, KVError>] = []
        results.reserveCapacity(writes.count)
        for write in writes {
            let mark = eval.effects.mark
            do {
                try conn.run("SAVEPOINT w")
                let failed = try eval.failedChecks(write.checks)
                if !failed.isEmpty {
                    try conn.run("ROLLBACK TO w")
                    try conn.run("RELEASE w")
                    results.append(.success(.checkFailed(failedChecks: failed)))
                    continue
                }
                let versionstamp = Versionstamps.make(counter: counter + 1)
                do {
                    for m in write.mutations { try eval.apply(m, versionstamp: versionstamp) }
                    for e in write.enqueues { try eval.enqueue(e) }
                } catch {
                    // The write is rejected (bad mutation, or a storage error
                    // confined to it); the rest of the batch goes on.
                    if conn.isAutocommit { return failAll(error) }  // SQLite rolled back the transaction
                    eval.effects.rollback(to: mark)
                    try conn.run("ROLLBACK TO w")
                    try conn.run("RELEASE w")
                    results.append(.failure(error.asKVError))
                    continue
                }
                try conn.run("RELEASE w")
                counter += 1
                results.append(.success(.committed(versionstamp: versionstamp)))
            } catch {
                // Savepoint bookkeeping failed: the transaction is not trustworthy.
                return failAll(error)
            }
        }

        do {
            if counter != writerCounter { try storeCounter(conn, counter) }
            try conn.run("COMMIT")
        } catch {
            // The in-memory counter is untouched, so it is restored by construction.
            return failAll(error)
        }
        if counter != writerCounter {
            writerCounter = counter
        }
        counterLock.lock()
        _committedCounter = counter
        _batchesCommitted += 1
        counterLock.unlock()
        EngineMetrics.recordCommit(writes: writes.count, startNs: metricsStart)
        if let e = eval.effects.earliestExpiryMs { sweeper.noteExpiry(e) }
        if let d = eval.effects.earliestDeadlineMs { queue.noteDue(d) }
        pendingNotifications = eval.effects.touched
        return results
    }
}

// MARK: - queues

extension KVStore {
    /// Starts pushing due messages to `deliver` with at most
    /// `options.concurrency` deliveries in flight. Without it, messages are
    /// only handed out by `leaseQueueMessage` (pull). Pull works either way:
    /// both take ready messages through the same atomic claim.
    public func startQueueDelivery(options: QueuePushOptions = QueuePushOptions(),
                                   deliver: @escaping QueueDeliverFunction) {
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

    /// Pull: leases the next due ready message for `visibilityMs`, waiting up
    /// to `waitMs` for one. Completes with nil when none became ready in
    /// time. The completion runs on the queue or writer thread; it must not block.
    public func leaseQueueMessage(visibilityMs: Int64, waitMs: Int64,
                                  completion: @escaping @Sendable (Result<QueueMessage?, KVError>) -> Void) {
        core.queue.lease(visibilityMs: visibilityMs, waitMs: waitMs, completion: completion)
    }

    /// Acknowledges a lease: the message is deleted.
    public func ackQueueMessage(id: Int64, leaseSeq: Int64,
                                completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void) {
        core.queue.settle(id: id, leaseSeq: leaseSeq, success: true, completion: completion)
    }

    /// Reports a failed attempt: retried after the next delay of the
    /// message's backoff schedule, or dead-lettered when it is exhausted.
    public func failQueueMessage(id: Int64, leaseSeq: Int64,
                                 completion: @escaping @Sendable (Result<QueueSettleResult, KVError>) -> Void) {
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
}
