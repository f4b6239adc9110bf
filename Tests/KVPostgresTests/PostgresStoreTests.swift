import Foundation
import XCTest
@testable import KVPostgres
import KVEngine

/// One store (one daemon) on PostgreSQL: what is specific to this backend.
/// The shared engine behaviour is covered by the engine suite, which also
/// runs against PostgresStore.
final class PostgresStoreTests: PGTestCase {
    func testSchemaIsCreatedOnceWhenDaemonsStartTogether() throws {
        let ids = Locked<[String]>([])
        let errors = Locked<[String]>([])
        let url = self.url!, options = self.options
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            do {
                let s = try PostgresStore(url: url, options: options)
                ids.with { $0.append(s.databaseId) }
                s.close()
            } catch {
                errors.with { $0.append("\(error)") }
            }
        }
        XCTAssertEqual(errors.value, [])
        XCTAssertEqual(Set(ids.value).count, 1, "one database id for every daemon")
        let s = try open()
        XCTAssertEqual(s.databaseId, ids.value.first)
        let v = try admin().query("SELECT version FROM schema_version")
        XCTAssertEqual(v.int64(0, 0), Int64(PGSchema.latestVersion))
    }

    func testNewerSchemaIsRejected() throws {
        _ = try open().close()
        try admin().execScript("UPDATE schema_version SET version = 999")
        XCTAssertThrowsError(try open()) { e in
            guard case .internalError(let m)? = e as? KVError else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("newer"), m)
        }
    }

    func testUnreachableDatabaseIsUnavailable() {
        XCTAssertThrowsError(try PostgresStore(url: "postgresql://kv:secret@127.0.0.1:1/kv?connect_timeout=2")) { e in
            XCTAssertEqual((e as? KVError)?.isUnavailable, true, "\(e)")
            XCTAssertFalse("\(e)".contains("secret"))
        }
    }

    func testLocationMasksThePassword() throws {
        let s = try open()
        XCTAssertFalse(s.location.isEmpty)
        let masked = PGMask.mask("postgresql://u:pw@h/db")
        XCTAssertFalse(masked.contains("pw"))
    }

    func testWritesAndReadsRoundTripBytes() throws {
        let s = try open()
        let key: Bytes = [0x00, 0xFF, 0x01]
        let vs = try s.commit([Mutation(key: key, kind: .set(KVValue(data: [0, 0, 1], encoding: .bytes)))])
        XCTAssertEqual(
            try s.readKeys([key])[0],
            KVEntry(key: key, value: KVValue(data: [0, 0, 1], encoding: .bytes), versionstamp: vs))
        try s.commit([set("a", bytesValue("1")), set("b", bytesValue("2")), set("c", bytesValue("3"))])
        let r = try s.snapshotRead([
            ReadRange(start: k("a"), end: k("c"), limit: 10),
            ReadRange(start: k("a"), end: k("d"), limit: 2, reverse: true),
            ReadRange(start: k("x"), end: k("y"), limit: 10)
        ])
        XCTAssertEqual(r[0].map(\.key), [k("a"), k("b")])
        XCTAssertEqual(r[1].map(\.key), [k("c"), k("b")])
        XCTAssertEqual(r[2], [])
        try s.commit([Mutation(key: k("b"), kind: .delete)])
        XCTAssertNil(try s.get("b"))
    }

    func testFailedCheckChangesNothingAndUsesNoVersionstamp() throws {
        let s = try open()
        let va = try s.commit([set("a", bytesValue("1"))])
        let before = s.currentVersionstamp
        let r = try s.sync(
            AtomicWrite(
                checks: [Check(key: k("a"), versionstamp: nil), Check(key: k("z"), versionstamp: nil)],
                mutations: [set("a", bytesValue("2"))],
                enqueues: [Enqueue(payload: [1], deadlineMs: 0, keysIfUndelivered: [], backoffSchedule: [])]))
        XCTAssertEqual(r, .checkFailed(failedChecks: [0]))
        XCTAssertEqual(try s.get("a")?.versionstamp, va)
        XCTAssertEqual(s.currentVersionstamp, before)
        XCTAssertEqual(try s.queueCounts(), QueueCounts(ready: 0, inflight: 0))
    }

    func testBatchWritesSeeEarlierWritesOfTheBatch() throws {
        let s = try open()
        let results = Locked<[Int: AtomicWriteResult]>([:])
        let done = DispatchGroup()
        var writes: [(AtomicWrite, @Sendable (Result<AtomicWriteResult, KVError>) -> Void)] = []
        for i in 0..<3 {
            done.enter()
            writes.append(
                (
                    AtomicWrite(
                        checks: [Check(key: k("x"), versionstamp: nil)], mutations: [set("x", bytesValue("\(i)"))]),
                    { r in
                        results.with { $0[i] = try? r.get() }
                        done.leave()
                    }
                ))
        }
        s.submitAll(writes)
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(s.batchesCommitted, 1, "one transaction")
        guard case .committed(let vs)? = results.value[0] else { return XCTFail("\(results.value)") }
        XCTAssertEqual(results.value[1], .checkFailed(failedChecks: [0]))
        XCTAssertEqual(results.value[2], .checkFailed(failedChecks: [0]))
        XCTAssertEqual(try s.get("x"), KVEntry(key: k("x"), value: bytesValue("0"), versionstamp: vs))
    }

    func testInvalidMutationFailsOnlyItsWrite() throws {
        let s = try open()
        try s.commit([set("text", bytesValue("not a number"))])
        let results = Locked<[Int: Result<AtomicWriteResult, KVError>]>([:])
        let done = DispatchGroup()
        let ws: [AtomicWrite] = [
            AtomicWrite(mutations: [set("a", bytesValue("1"))]),
            AtomicWrite(mutations: [
                set("b", bytesValue("1")),
                Mutation(key: k("text"), kind: .sum(u64(1), min: nil, max: nil, clamp: false))
            ]),
            AtomicWrite(mutations: [set("c", bytesValue("1"))])
        ]
        var writes: [(AtomicWrite, @Sendable (Result<AtomicWriteResult, KVError>) -> Void)] = []
        for (i, w) in ws.enumerated() {
            done.enter()
            writes.append(
                (
                    w,
                    { r in
                        results.with { $0[i] = r }
                        done.leave()
                    }
                ))
        }
        s.submitAll(writes)
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        guard case .failure(.invalidMutation)? = results.value[1] else { return XCTFail("\(results.value)") }
        XCTAssertNotNil(try s.get("a"))
        XCTAssertNil(try s.get("b"), "nothing of the invalid write is applied")
        XCTAssertNotNil(try s.get("c"))
        let va = try s.get("a")!.versionstamp, vc = try s.get("c")!.versionstamp
        XCTAssertEqual(
            Versionstamps.counter(of: vc)! - Versionstamps.counter(of: va)!, 1, "the failed write took no versionstamp")
    }

    func testOversizedKeyFailsAloneNotItsBatch() throws {
        let s = try open()
        // Larger than a btree index row may be: PostgreSQL rejects the statement.
        let huge = Bytes((0..<9000).map { _ in UInt8.random(in: 0...255) })  // incompressible
        let results = Locked<[Int: Result<AtomicWriteResult, KVError>]>([:])
        let done = DispatchGroup()
        var writes: [(AtomicWrite, @Sendable (Result<AtomicWriteResult, KVError>) -> Void)] = []
        for (i, m) in [
            set("ok1", bytesValue("1")), Mutation(key: huge, kind: .set(bytesValue("x"))), set("ok2", bytesValue("2"))
        ].enumerated() {
            done.enter()
            writes.append(
                (
                    AtomicWrite(mutations: [m]),
                    { r in
                        results.with { $0[i] = r }
                        done.leave()
                    }
                ))
        }
        s.submitAll(writes)
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        guard case .failure? = results.value[1] else { return XCTFail("\(results.value)") }
        XCTAssertNotNil(try s.get("ok1"))
        XCTAssertNotNil(try s.get("ok2"))
    }

    func testConcurrentWritesShareTransactions() throws {
        let s = try open()
        let n = 400
        let done = DispatchGroup()
        let stamps = Locked<[Versionstamp]>([])
        let t0 = Date()
        for i in 0..<n {
            done.enter()
            s.atomicWrite(AtomicWrite(mutations: [set("k\(i)", bytesValue("\(i)"))])) { r in
                if case .success(.committed(let vs)) = r { stamps.with { $0.append(vs) } }
                done.leave()
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success)
        let dt = Date().timeIntervalSince(t0)
        XCTAssertEqual(stamps.value.count, n)
        XCTAssertEqual(Set(stamps.value).count, n, "distinct versionstamps")
        XCTAssertLessThan(s.batchesCommitted, n / 4, "group commit: \(s.batchesCommitted) transactions for \(n) writes")
        print("PG group commit: \(n) writes in \(s.batchesCommitted) transactions, \(Int(Double(n) / dt)) writes/s")
    }

    func testExpiryIsHiddenAtOnceAndSweptWithWatchers() throws {
        let s = try open()
        let t = nowMs()
        try s.commit([set("e", bytesValue("1"), expireAtMs: t + 300), set("keep", bytesValue("1"))])
        XCTAssertNotNil(try s.get("e"))
        XCTAssertNil(try s.get("e", nowMs: t + 300), "hidden at its expiry time even before a sweep")
        let woken = Box<Bool>()
        let w = s.watch(keys: [k("e")]) { woken.set(true) }
        defer { w.cancel() }
        XCTAssertEqual(woken.wait(seconds: 10), true, "the sweep wakes the watcher")
        XCTAssertGreaterThanOrEqual(nowMs(), t + 300)
        XCTAssertEqual(s.expiredEntriesRemoved, 1)
        XCTAssertEqual(try admin().query("SELECT count(*) FROM entries").int64(0, 0), 1)
    }

    func testQueueLeaseAckFailAndDeadLetter() throws {
        let s = try open()
        try s.enqueue([7], keys: [k("dl1"), k("dl2")], backoff: [50])
        let m1 = try XCTUnwrap(try s.lease())
        XCTAssertEqual(m1.attempt, 1)
        XCTAssertEqual(m1.payload, [7])
        XCTAssertNil(try s.lease(), "in flight: not handed out twice")
        guard case .retryScheduled(let at) = try s.fail(m1) else { return XCTFail() }
        XCTAssertGreaterThanOrEqual(at, nowMs() + 0 - 50)
        XCTAssertEqual(try s.fail(m1), .leaseLost)
        let m2 = try XCTUnwrap(try s.lease(waitMs: 5000))
        XCTAssertEqual(m2.attempt, 2)
        XCTAssertEqual(m2.id, m1.id)
        let woken = Box<Bool>()
        let w = s.watch(keys: [k("dl2")]) { woken.set(true) }
        defer { w.cancel() }
        guard case .deadLettered(let vs?) = try s.fail(m2) else { return XCTFail() }
        XCTAssertEqual(woken.wait(seconds: 5), true)
        XCTAssertEqual(
            try s.get("dl1"), KVEntry(key: k("dl1"), value: KVValue(data: [7], encoding: .v8), versionstamp: vs))
        XCTAssertEqual(try s.get("dl2")?.versionstamp, vs)
        XCTAssertEqual(s.currentVersionstamp, vs)
        XCTAssertEqual(try s.queueCounts(), QueueCounts(ready: 0, inflight: 0))
        XCTAssertEqual(try s.ack(m2), .notFound)

        try s.enqueue([8])
        let m3 = try XCTUnwrap(try s.lease())
        XCTAssertEqual(try s.ack(m3), .acknowledged)
        XCTAssertEqual(s.queueStats.acknowledged, 1)
        XCTAssertEqual(s.queueStats.deadLettered, 1)
    }

    func testExpiredLeaseIsReadyAgain() throws {
        let s = try open()
        try s.enqueue([1])
        let m = try XCTUnwrap(try s.lease(visibilityMs: 200))
        let again = try XCTUnwrap(try s.lease(waitMs: 5000))
        XCTAssertEqual(again.id, m.id)
        XCTAssertEqual(again.attempt, 1, "an expired lease is not a failed attempt")
        XCTAssertEqual(try s.ack(m), .leaseLost)
        XCTAssertEqual(try s.ack(again), .acknowledged)
    }

    func testPushDeliversDueMessagesAtTheirDeadline() throws {
        let s = try open()
        let got = Box<(QueueMessage, Int64)>()
        s.startQueueDelivery(options: QueuePushOptions(concurrency: 2, leaseMs: 10_000)) { m, done in
            got.set((m, nowMs()))
            done(true)
        }
        let deadline = nowMs() + 300
        try s.enqueue([9], deadlineMs: deadline)
        let (m, at) = try XCTUnwrap(got.wait(seconds: 10))
        XCTAssertEqual(m.payload, [9])
        XCTAssertGreaterThanOrEqual(at, deadline)
        XCTAssertLessThan(at, deadline + 300)
        XCTAssertTrue(s.stopQueueDelivery(drainTimeoutMs: 5000))
    }

    func testSigningKeysCreatedOnceAndRotatedKeepingThePrevious() throws {
        let a = try open(), b = try open()
        let first = try a.ensureSigningKey(keyId: "k1", secret: [1, 2, 3])
        let second = try b.ensureSigningKey(keyId: "other", secret: [9])
        XCTAssertEqual(first.map(\.keyId), ["k1"])
        XCTAssertEqual(second, first, "the second daemon adopts the stored key")
        _ = try a.rotateSigningKey(keyId: "k2", secret: [4])
        let after = try b.rotateSigningKey(keyId: "k3", secret: [5])
        XCTAssertEqual(after.map(\.keyId), ["k3", "k2"], "newest first, the previous one kept")
        XCTAssertEqual(try a.signingKeys().first?.secret, [5])
    }

    func testStorageStatsAndCheckWritable() throws {
        let s = try open()
        try s.commit([set("a", bytesValue("1")), set("b", bytesValue("2"))])
        let st = try s.storageStats()
        XCTAssertEqual(st.entries, 2)
        XCTAssertGreaterThan(st.sizeBytes, 0)
        XCTAssertTrue(s.checkWritable())
        s.close()
        XCTAssertFalse(s.checkWritable())
        let r = Box<Result<AtomicWriteResult, KVError>>()
        s.atomicWrite(AtomicWrite(mutations: [set("c", bytesValue("1"))])) { r.set($0) }
        guard case .failure(.unavailable)? = r.wait() else { return XCTFail() }
    }
}

/// Latency and throughput probes (printed; asserted only loosely, since the
/// test machine is shared). `make bench` owns the comparable numbers.
final class PostgresProbeTests: PGTestCase {
    func testSequentialWriteAndReadLatency() throws {
        let s = try open()
        var w: [Double] = [], r: [Double] = [], r3: [Double] = []
        for i in 0..<300 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try s.commit([set("l\(i % 10)", bytesValue("\(i)"))])
            let t1 = DispatchTime.now().uptimeNanoseconds
            _ = try s.get("l\(i % 10)")
            let t2 = DispatchTime.now().uptimeNanoseconds
            _ = try s.snapshotRead([
                ReadRange(start: k("l0"), end: k("l5"), limit: 10),
                ReadRange(start: k("l5"), end: k("m"), limit: 10),
                ReadRange(start: k("x"), end: k("y"), limit: 10)
            ])
            let t3 = DispatchTime.now().uptimeNanoseconds
            w.append(Double(t1 - t0) / 1e6)
            r.append(Double(t2 - t1) / 1e6)
            r3.append(Double(t3 - t2) / 1e6)
        }
        func p(_ a: [Double], _ q: Double) -> String {
            String(format: "%.2f", a.sorted()[Int(Double(a.count - 1) * q)])
        }
        print(
            "PG probe: write p50 \(p(w, 0.5)) ms p99 \(p(w, 0.99)) ms; 1-key read p50 \(p(r, 0.5)) ms; 3-range snapshot read p50 \(p(r3, 0.5)) ms"
        )
        XCTAssertLessThan(w.sorted()[w.count / 2], 200)
    }

    func testConcurrentWriteThroughputOneAndTwoDaemons() throws {
        for daemons in [1, 2] {
            let stores = try (0..<daemons).map { _ in try open() }
            let n = 4000
            let done = DispatchGroup()
            let t0 = Date()
            let errors = Locked(0)
            for i in 0..<n {
                done.enter()
                stores[i % daemons].atomicWrite(
                    AtomicWrite(mutations: [set("t\(daemons)-\(i % 500)", bytesValue("\(i)"))])
                ) { r in
                    if case .failure = r { errors.with { $0 += 1 } }
                    done.leave()
                }
            }
            XCTAssertEqual(done.wait(timeout: .now() + 120), .success)
            let dt = Date().timeIntervalSince(t0)
            XCTAssertEqual(errors.value, 0)
            let batches = stores.map(\.batchesCommitted).reduce(0, +)
            print(
                "PG probe: \(n) concurrent writes through \(daemons) store(s): \(Int(Double(n) / dt)) writes/s, \(batches) transactions"
            )
        }
    }
}
