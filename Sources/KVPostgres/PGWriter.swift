// Group commit on PostgreSQL. One writer thread per store, with its own
// connection, drains pending atomic writes into one transaction of two
// round trips:
//
//   1. BEGIN; lock the counter row (FOR UPDATE: this orders commits of all
//      daemons, so versionstamps increase in commit order); fetch every key
//      the batch checks or reads. Under READ COMMITTED the fetch runs after
//      the lock is granted, so it sees every earlier commit: checks are
//      evaluated at commit.
//   2. Evaluate the writes in order in memory (each sees the ones before;
//      a failed check or invalid mutation drops only that write), then write
//      the final state of every changed key with set-based statements, the
//      enqueues, a commit marker, the new counter, a NOTIFY, and COMMIT.
//
// If the connection drops after COMMIT was sent, the outcome is unknown: the
// writer reconnects and looks up the batch's commit marker. Present: the
// batch committed (answer it). Absent: it rolled back (run it again).

import Foundation
import KVEngine
import Logging
import Synchronization
import Threading

final class PGWriter: Sendable {
    struct Pending {
        let write: AtomicWrite
        let completion: @Sendable (Result<AtomicWriteResult, KVError>) -> Void
        let submittedMs: Int64
    }

    private let ctx: PGContext
    /// Writer-thread only.
    private let session: PGSession

    private struct Queue {
        var pending: [Pending] = []
        var closing = false
    }
    /// A condition: the writer thread waits for writes.
    private let queue = ConditionLock(Queue())
    private let thread = Mutex<JoinableThread?>(nil)

    private struct Info {
        var pid: Int32
        /// COMMITs whose answer was lost, by what the commit marker showed.
        var resolved = (committed: 0, rolledBack: 0)
    }
    private let info: Mutex<Info>

    init(ctx: PGContext, conn: PGConnection) {
        self.ctx = ctx
        session = PGSession(conn, connect: ctx.connect)
        info = Mutex(Info(pid: conn.backendPID))
    }

    /// The thread holds the writer until `close` ends it.
    func start() throws {
        let t = try JoinableThread(name: "kvpg-writer") { [self] in loop() }
        thread.withLock { $0 = t }
    }

    var isWriterThread: Bool { thread.withLock { $0 }?.isCurrent ?? false }

    func submit(_ writes: [(AtomicWrite, @Sendable (Result<AtomicWriteResult, KVError>) -> Void)]) {
        let now = PGContext.wallClockMs()
        let accepted = queue.withLock { q in
            if q.closing { return false }
            for (w, c) in writes { q.pending.append(Pending(write: w, completion: c, submittedMs: now)) }
            return true
        }
        guard accepted else {
            for (_, c) in writes { c(.failure(.unavailable("shutting down"))) }
            return
        }
        queue.signal()
    }

    /// Lets the writer drain what was queued and waits for it (on the writer
    /// thread itself, from a completion, it ends on its own).
    func close() {
        queue.withLock { $0.closing = true }
        queue.broadcast()
        thread.withLock { $0 }?.join()
    }

    private var isClosing: Bool { queue.withLock { $0.closing } }

    /// PID of the writer connection's server process (tests terminate it).
    var backendPID: Int32 { info.withLock { $0.pid } }

    /// Tests: drop the connection right after the next COMMIT succeeded.
    let loseNextCommitAnswer = Mutex(false)

    /// COMMITs whose answer was lost, by what the commit marker showed.
    var unknownOutcomes: (committed: Int, rolledBack: Int) { info.withLock { $0.resolved } }

    private func connected() throws -> PGConnection {
        let c = try session.connected()
        let p = c.backendPID  // also after a reconnect made by the marker lookup
        info.withLock { $0.pid = p }
        return c
    }

    private func loop() {
        let limit = max(1, ctx.options.maxBatchSize)
        while true {
            let next: [Pending]? = queue.wait { q in
                if q.pending.isEmpty { return q.closing ? .done(nil) : .wait(timeoutMs: nil) }
                let n = min(limit, q.pending.count)
                defer { q.pending.removeFirst(n) }
                return .done(Array(q.pending.prefix(n)))
            }
            guard let batch = next else { break }

            let (results, outcome) = run(batch)
            if let outcome {
                ctx.noteCounter(outcome.counter, batch: true)
                if let e = outcome.expiryMs { ctx.noteExpiry(e) }
                if let d = outcome.dueMs { ctx.noteDue(d) }
                // Before the replies, so an acknowledged write has already
                // woken its local watchers (they only schedule a read).
                ctx.hub.notify(changed: outcome.touched)
            }
            for (p, r) in zip(batch, results) { p.completion(r) }
        }
        session.close()
    }

    struct Outcome: Sendable {
        var counter: UInt64
        var touched: [Bytes]
        var expiryMs: Int64?
        var dueMs: Int64?
    }

    private struct Evaluated {
        var results: [Result<AtomicWriteResult, KVError>]
        var statements: [PGQuery]
        var outcome: Outcome
        var committedAny: Bool
    }

    /// Commits a batch, retrying serialization failures and lost connections
    /// until the oldest write has waited `unavailableAfterMs`.
    private func run(_ batch: [Pending]) -> ([Result<AtomicWriteResult, KVError>], Outcome?) {
        let writes = batch.map(\.write)
        let oldest = batch.map(\.submittedMs).min() ?? PGContext.wallClockMs()
        // Past this, a batch that did not commit fails with `.unavailable`
        // (nothing of it applied) instead of being tried again.
        let giveUpAt = oldest + ctx.options.unavailableAfterMs
        var attempt = 0
        while true {
            attempt += 1
            let batchId = Bytes((0..<16).map { _ in UInt8.random(in: 0...255) })
            do {
                let start = EngineMetrics.now()
                let (results, outcome) = try runOnce(writes, batchId: batchId)
                EngineMetrics.recordCommit(writes: writes.count, startNs: start)
                return (results, outcome)
            } catch let e as PGError {
                session.conn?.rollbackQuietly()
                switch e.kind {
                case .retry:
                    // Rolled back by the server (deadlock, serialization): run again.
                    ctx.logger.debug("group commit: \(e); retrying")
                    PGMetrics.retried()
                    if PGContext.wallClockMs() >= giveUpAt {
                        return (Array(repeating: .failure(e.asKVError), count: writes.count), nil)
                    }
                    if attempt > 1 { usleep(UInt32.random(in: 1_000...(5_000 * UInt32(min(attempt, 10))))) }
                    continue
                case .other:
                    // One write may be at fault (e.g. a key too large for the
                    // index): run them one by one so only it fails.
                    if writes.count > 1 { return runSeparately(batch) }
                    ctx.logger.error("group commit failed: \(e)")
                    return ([.failure(e.asKVError)], nil)
                case .connectionLost:
                    session.close()
                    if let evaluated = e.context as? PGCommitSnapshot {
                        // COMMIT may have happened: find out before answering.
                        let resolveBy = max(giveUpAt, PGContext.wallClockMs() + ctx.options.resolveTimeoutMs)
                        var resolution = resolve(batchId: batchId, until: resolveBy)
                        // Never answer while the outcome is unknown: a 5xx makes
                        // the client retry a write that may have committed (a
                        // sum applied twice). Keep the client waiting until
                        // PostgreSQL answers; only shutdown ends the wait.
                        var warned = false
                        while case .unknown(let why) = resolution, !isClosing {
                            if !warned {
                                ctx.logger.warning(
                                    "group commit: outcome of a lost COMMIT still unknown (\(why)); waiting for PostgreSQL before answering"
                                )
                                warned = true
                            }
                            resolution = resolve(
                                batchId: batchId, until: PGContext.wallClockMs() + ctx.options.resolveTimeoutMs)
                        }
                        switch resolution {
                        case .committed:
                            info.withLock { $0.resolved.committed += 1 }
                            ctx.logger.notice(
                                "group commit: connection lost during COMMIT; the commit marker shows it committed")
                            return (evaluated.results, evaluated.outcome)
                        case .rolledBack:
                            info.withLock { $0.resolved.rolledBack += 1 }
                            ctx.logger.notice(
                                "group commit: connection lost during COMMIT; it rolled back, running the batch again")
                            if PGContext.wallClockMs() >= giveUpAt {
                                return (
                                    Array(
                                        repeating: .failure(.unavailable("PostgreSQL unavailable: \(e.message)")),
                                        count: writes.count), nil
                                )
                            }
                            continue
                        case .unknown(let why):
                            return (
                                Array(
                                    repeating: .failure(
                                        .unavailable("PostgreSQL unavailable; outcome unknown: \(why)")),
                                    count: writes.count), nil
                            )
                        }
                    }
                    if PGContext.wallClockMs() >= giveUpAt {
                        return (
                            Array(
                                repeating: .failure(.unavailable("PostgreSQL unavailable: \(e.message)")),
                                count: writes.count), nil
                        )
                    }
                    // The first retry at once (a dropped connection), then back off
                    // while PostgreSQL stays unreachable.
                    if attempt > 1 { usleep(UInt32(min(500, 10 << min(attempt - 2, 6))) * 1000) }
                    continue
                }
            } catch {
                session.conn?.rollbackQuietly()
                let k = (error as? KVError) ?? .internalError("\(error)")
                return (Array(repeating: .failure(k), count: writes.count), nil)
            }
        }
    }

    private func runSeparately(_ batch: [Pending]) -> ([Result<AtomicWriteResult, KVError>], Outcome?) {
        var results: [Result<AtomicWriteResult, KVError>] = []
        var merged: Outcome?
        for p in batch {
            let (r, o) = run([p])
            results += r
            if let o {
                merged = Outcome(
                    counter: max(merged?.counter ?? 0, o.counter),
                    touched: (merged?.touched ?? []) + o.touched,
                    expiryMs: [merged?.expiryMs, o.expiryMs].compactMap { $0 }.min(),
                    dueMs: [merged?.dueMs, o.dueMs].compactMap { $0 }.min())
            }
        }
        return (results, merged)
    }

    private enum Resolution { case committed, rolledBack, unknown(String) }

    /// After a connection loss during COMMIT: reconnects and looks for the marker.
    private func resolve(batchId: Bytes, until deadline: Int64) -> Resolution {
        do {
            let found = try ctx.withRetries(conn: &session.conn, until: deadline, what: "commit marker lookup") { c in
                try c.query(PGSQL.findMarker, [.bytea(batchId)]).rowCount > 0
            }
            return found ? .committed : .rolledBack
        } catch {
            return .unknown("\(error)")
        }
    }

    /// One attempt. Throws PGError; a lost connection after COMMIT was sent
    /// carries the evaluated results in `context`.
    private func runOnce(_ writes: [AtomicWrite], batchId: Bytes) throws -> (
        [Result<AtomicWriteResult, KVError>], Outcome?
    ) {
        let c = try connected()
        let nowMs = PGContext.wallClockMs()

        // Round trip 1: lock the counter, fetch what the batch reads.
        var readKeys: [Bytes] = []
        var seen = Set<Bytes>()
        for w in writes {
            for k in MutationEvaluator<PGBatchOverlay>.keysRead(by: w) where seen.insert(k).inserted {
                readKeys.append(k)
            }
        }
        var first = [PGQuery(PGSQL.begin), PGQuery(PGSQL.lockCounter)]
        if !readKeys.isEmpty { first.append(PGQuery(PGSQL.selectKeys, [.byteaArray(readKeys), .int8(nowMs)])) }
        let r1 = try c.pipeline(first)
        guard r1[1].rowCount == 1 else { throw PGError(kind: .other, message: "meta row missing") }
        let base = UInt64(bitPattern: r1[1].int64(0, 0))
        var rows: [Bytes: PGBatchOverlay.Entry] = [:]
        if readKeys.count > 0 {
            let r = r1[2]
            for i in 0..<r.rowCount {
                let raw = r.int64(i, 2)
                guard let enc = Int32(exactly: raw).flatMap(ValueEncoding.init(rawValue:)) else {
                    throw PGError(kind: .other, message: "The value encoding \(raw) is unknown.")
                }
                rows[r.bytes(i, 0)] = PGBatchOverlay.Entry(
                    value: KVValue(data: r.bytes(i, 1), encoding: enc),
                    versionstamp: r.bytes(i, 3),
                    expiresAtMs: r.optionalInt64(i, 4))
            }
        }

        // Evaluate in memory.
        let ev = try evaluate(
            writes, base: base, overlay: PGBatchOverlay(fetchedKeys: seen, rows: rows),
            nowMs: nowMs, batchId: batchId)
        guard ev.committedAny else {
            try c.execScript("ROLLBACK")
            return (ev.results, nil)
        }

        // Round trip 2: write, mark, count, notify, commit.
        do {
            _ = try c.pipeline(ev.statements)
            if loseNextCommitAnswer.withLock({ v in
                defer { v = false }
                return v
            }) {
                // Test hook: as if the connection dropped right after the server committed.
                c.close()
                throw PGError(kind: .connectionLost, message: "test: answer to COMMIT lost")
            }
        } catch var e as PGError {
            if e.kind == .connectionLost {
                e.context = PGCommitSnapshot(results: ev.results, outcome: ev.outcome)
            }
            throw e
        }
        return (ev.results, ev.outcome)
    }

    private func evaluate(
        _ writes: [AtomicWrite], base: UInt64, overlay: PGBatchOverlay,
        nowMs: Int64, batchId: Bytes
    ) throws -> Evaluated {
        let eval = MutationEvaluator(target: overlay, nowMs: nowMs)
        var counter = base
        var results: [Result<AtomicWriteResult, KVError>] = []
        results.reserveCapacity(writes.count)
        for w in writes {
            let mark = eval.effects.mark
            let failed = try eval.failedChecks(w.checks)
            if !failed.isEmpty {
                results.append(.success(.checkFailed(failedChecks: failed)))
                continue
            }
            let vs = Versionstamps.make(counter: counter + 1)
            do {
                for m in w.mutations { try eval.apply(m, versionstamp: vs) }
                for e in w.enqueues { try eval.enqueue(e) }
            } catch let e as KVError {
                overlay.discardWrite()
                eval.effects.rollback(to: mark)
                results.append(.failure(e))
                continue
            }
            overlay.keepWrite()
            counter += 1
            results.append(.success(.committed(versionstamp: vs)))
        }

        var puts: (keys: [Bytes], values: [Bytes], encodings: [Int16], stamps: [Bytes], expiries: [Int64?]) = (
            [], [], [], [], []
        )
        var deletes: [Bytes] = []
        for k in overlay.changeOrder {
            if let e = overlay.changes[k]! {
                puts.keys.append(k)
                puts.values.append(e.value.data)
                puts.encodings.append(Int16(e.value.encoding.rawValue))
                puts.stamps.append(e.versionstamp)
                puts.expiries.append(e.expiresAtMs)
            } else {
                deletes.append(k)
            }
        }
        var st: [PGQuery] = []
        if !puts.keys.isEmpty {
            st.append(
                PGQuery(
                    PGSQL.upsert,
                    [
                        .byteaArray(puts.keys), .byteaArray(puts.values), .int2Array(puts.encodings),
                        .byteaArray(puts.stamps), .int8Array(puts.expiries)
                    ]))
        }
        if !deletes.isEmpty { st.append(PGQuery(PGSQL.deleteKeys, [.byteaArray(deletes)])) }
        let enq = overlay.enqueues
        if !enq.isEmpty {
            st.append(
                PGQuery(
                    PGSQL.insertQueueMessages,
                    [
                        .byteaArray(enq.map(\.payload)), .int8Array(enq.map { $0.deadlineMs }),
                        .byteaArray(enq.map { QueueKeysCodec.encode($0.keysIfUndelivered) }),
                        .textArray(enq.map { QueueKeysCodec.encodeBackoff($0.backoffSchedule) })
                    ]))
        }
        st.append(PGQuery(PGSQL.insertMarker, [.bytea(batchId), .int8(Int64(bitPattern: counter))]))
        st.append(PGQuery(PGSQL.storeCounter, [.int8(Int64(bitPattern: counter))]))
        let touched = eval.effects.touched
        let outcome = Outcome(
            counter: counter, touched: touched, expiryMs: eval.effects.earliestExpiryMs,
            dueMs: eval.effects.earliestDeadlineMs)
        if let n = ctx.notifyQuery(
            counter: counter, keys: Array(Set(touched)), expiryMs: outcome.expiryMs,
            dueMs: outcome.dueMs)
        {
            st.append(n)
        }
        st.append(PGQuery("COMMIT"))
        return Evaluated(results: results, statements: st, outcome: outcome, committedAny: counter != base)
    }
}

/// What a batch would answer if its COMMIT took effect.
struct PGCommitSnapshot: Sendable {
    var results: [Result<AtomicWriteResult, KVError>]
    var outcome: PGWriter.Outcome
}
