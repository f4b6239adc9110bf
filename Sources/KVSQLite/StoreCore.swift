// The SQLite engine behind `SQLiteStore`: the group-commit writer thread,
// snapshot reads through the read pool, and the hooks the sweeper and the
// queue dispatcher run on the writer.

import CSQLite
import Foundation
import KVEngine
import Logging
import Synchronization
import Threading

/// @unchecked Sendable: the vars below that are not behind a lock
/// (`writerCounter`, `pendingNotifications`, and the connection in
/// `writeConn`) are touched only on the writer thread; `sweeper` and `queue`
/// are set once in init, before any other thread can see the core.
final class StoreCore: @unchecked Sendable {
    private struct PendingWrite {
        let write: AtomicWrite
        let completion: @Sendable (Result<AtomicWriteResult, KVError>) -> Void
    }

    let databaseId: String
    private let options: SQLiteStoreOptions
    private let logger = Logger(label: "kvengine")

    /// Owned by the writer thread after init.
    private let writeConn: SQLiteConnection
    /// Writer-thread-only: keys changed by the last committed batch.
    private var pendingNotifications: [Bytes] = []
    /// Writer-thread-only copy of the counter (last committed).
    private var writerCounter: UInt64
    private let readPool: ReadPool

    private struct Work {
        var pending: [PendingWrite] = []
        /// Jobs to run on the writer thread (with the write connection) between batches.
        var tasks: [@Sendable (SQLiteConnection) -> Void] = []
        var closing = false
    }
    /// A condition: the writer thread waits for work.
    private let work = ConditionLock(Work())
    private var writerThread: JoinableThread!

    let hub = WatchHub()
    private(set) var sweeper: ExpirySweeper!
    private(set) var queue: QueueDispatcher!
    /// In-flight queue messages of a previous process made ready again on open.
    private(set) var recoveredInflight = 0

    private struct Committed {
        var counter: UInt64
        var batches = 0
    }
    private let committed: Mutex<Committed>

    /// Number of group-commit transactions committed so far (for tests and metrics).
    var batchesCommitted: Int { committed.withLock { $0.batches } }

    var committedCounter: UInt64 { committed.withLock { $0.counter } }

    static func wallClockMs() -> Int64 { WallClock.nowMs() }

    init(path: String, options: SQLiteStoreOptions) throws {
        self.options = options
        let conn = try SQLiteConnection(
            path: path,
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
            committed = Mutex(Committed(counter: counter))
        } catch {
            conn.close()
            throw error
        }
        writeConn = conn
        readPool = ReadPool(path: path, maxConnections: options.readConnections)

        // The threads hold the core until `close` ends them.
        sweeper = ExpirySweeper(core: self)
        queue = QueueDispatcher(core: self, maxLeases: options.queueMaxLeases)
        do {
            writerThread = try JoinableThread(name: "kvengine-writer") { [self] in writerLoop() }
            try sweeper.start()
            try queue.start()
        } catch {
            close()
            throw KVError.internalError("\(error)")
        }
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
            entries.append(
                KVEntry(
                    key: s.columnBytes(0),
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

    func entryCount() throws -> Int64 {
        do {
            return try readPool.withConnection { c in
                let s = try c.statement("SELECT COUNT(*) FROM entries")
                defer { s.reset() }
                return try s.step() ? s.columnInt64(0) : 0
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

    /// A read on a pool connection, errors as KVError.
    func read<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        do {
            return try readPool.withConnection(body)
        } catch {
            throw error.asKVError
        }
    }

    // MARK: - writes

    func submit(_ write: AtomicWrite, completion: @escaping @Sendable (Result<AtomicWriteResult, KVError>) -> Void) {
        let accepted = work.withLock { w in
            if w.closing { return false }
            w.pending.append(PendingWrite(write: write, completion: completion))
            return true
        }
        guard accepted else { return completion(.failure(.unavailable("shutting down"))) }
        work.signal()
    }

    /// Queues several writes at once so that they land in the same batch
    /// (when they fit in maxBatchSize). Used by tests.
    func submitAll(_ writes: [(AtomicWrite, @Sendable (Result<AtomicWriteResult, KVError>) -> Void)]) {
        let accepted = work.withLock { w in
            if w.closing { return false }
            for (write, c) in writes { w.pending.append(PendingWrite(write: write, completion: c)) }
            return true
        }
        guard accepted else {
            for (_, c) in writes { c(.failure(.unavailable("shutting down"))) }
            return
        }
        work.signal()
    }

    /// Runs `body` on the writer thread between batches; false if shutting down.
    @discardableResult
    func onWriter(_ body: @escaping @Sendable (SQLiteConnection) -> Void) -> Bool {
        let queued = work.withLock { w in
            if w.closing { return false }
            w.tasks.append(body)
            return true
        }
        if queued { work.signal() }
        return queued
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
        return box.wait(timeoutMs: 5_000) ?? false
    }

    var isWriterThread: Bool { writerThread?.isCurrent ?? false }

    /// Stops the sweeper and the dispatcher, lets the writer drain what was
    /// queued, and waits for all three threads: after that nothing holds the
    /// core. On the writer thread itself (a task or a completion closed the
    /// store) nothing waits: a sweep or round may be waiting for the writer,
    /// and the writer ends on its own once it is drained.
    func close() {
        let onWriter = isWriterThread
        sweeper.stop(wait: !onWriter)
        queue.stop(wait: !onWriter)
        work.withLock { $0.closing = true }
        work.broadcast()
        if onWriter {
            writerThread?.detach()
        } else {
            writerThread?.join()
        }
        readPool.close()
    }

    private func writerLoop() {
        let batchLimit = Swift.max(1, options.maxBatchSize)
        while true {
            // nil: closing and drained.
            let next: (tasks: [@Sendable (SQLiteConnection) -> Void], batch: [PendingWrite])? = work.wait { w in
                if w.pending.isEmpty && w.tasks.isEmpty {
                    return w.closing ? .done(nil) : .wait(timeoutMs: nil)
                }
                let tasks = w.tasks
                w.tasks.removeAll()
                let n = Swift.min(w.pending.count, batchLimit)
                let batch = Array(w.pending.prefix(n))
                w.pending.removeFirst(n)
                return .done((tasks, batch))
            }
            guard let (tasksNow, batch) = next else { break }

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
    }

    /// Writer thread only (from an `onWriter` task): runs `body` in its own
    /// transaction as one commit with the next versionstamp from the same
    /// counter as atomic writes, then wakes the watchers of the keys it
    /// touched. Nothing changes if `body` or the commit throws.
    func commitVersionstamped(
        _ conn: SQLiteConnection,
        _ body: (WriteEvaluator, Versionstamp) throws -> Void
    ) throws -> Versionstamp {
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
        committed.withLock { c in
            c.counter = counter
            c.batches += 1
        }
        if let e = eval.effects.earliestExpiryMs { sweeper.noteExpiry(e) }
        hub.notify(changed: eval.effects.touched)
        return versionstamp
    }

    /// A read connection of the pool (bulk copy scans).
    func withReadConnection<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try readPool.withConnection(body)
    }

    /// Bulk copy: runs `body` in one write transaction on the writer thread;
    /// `body` returns the largest commit counter it wrote, and the counter is
    /// raised to it, so later commits get larger versionstamps. Throws KVError.
    func importOnWriter(_ body: @escaping @Sendable (SQLiteConnection) throws -> UInt64) throws {
        let box = ResultBox<Result<Void, KVError>>()
        let queued = onWriter { [self] conn in
            do {
                try conn.run("BEGIN IMMEDIATE")
                let counter = try body(conn)
                if counter > writerCounter { try storeCounter(conn, counter) }
                try conn.run("COMMIT")
                if counter > writerCounter {
                    writerCounter = counter
                    committed.withLock { $0.counter = counter }
                }
                box.set(.success(()))
            } catch {
                if !conn.isAutocommit { try? conn.run("ROLLBACK") }
                box.set(.failure(error.asKVError))
            }
        }
        guard queued else { throw KVError.unavailable("shutting down") }
        try box.wait().get()
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
        committed.withLock { c in
            c.counter = counter
            c.batches += 1
        }
        EngineMetrics.recordCommit(writes: writes.count, startNs: metricsStart)
        if let e = eval.effects.earliestExpiryMs { sweeper.noteExpiry(e) }
        if let d = eval.effects.earliestDeadlineMs { queue.noteDue(d) }
        pendingNotifications = eval.effects.touched
        return results
    }
}
