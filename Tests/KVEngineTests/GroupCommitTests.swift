import Foundation
import Threading
import Synchronization
import XCTest
@testable import KVEngine
@testable import KVPostgres
@testable import KVSQLite

/// Submits writes so that they land in one group-commit batch; waits for all.
func submitTogether(_ store: any KVStorage, _ writes: [AtomicWrite]) -> [Result<AtomicWriteResult, KVError>] {
    let boxes = writes.map { _ in ResultBox<Result<AtomicWriteResult, KVError>>() }
    let all = zip(writes, boxes).map { w, b in (w, { @Sendable r in b.set(r) }) }
    switch store {
    case let s as SQLiteStore: s.core.submitAll(all)
    case let s as PostgresStore: s.submitAll(all)
    default: XCTFail("no batch submission for \(type(of: store))")
    }
    return boxes.map { $0.wait() }
}

final class Counter: Sendable {
    private let n = Atomic<Int>(0)
    func add(_ d: Int = 1) { n.add(d, ordering: .relaxed) }
    var value: Int { n.load(ordering: .relaxed) }
}

final class GroupCommitTests: KVTestCase {
    func testSameBatchCheckSeesEarlierWrite() throws {
        let batchesBefore = batchesCommitted
        let a = AtomicWrite(checks: [Check(key: k("x"), versionstamp: nil)], mutations: [set("x", bytesValue("A"))])
        let b = AtomicWrite(checks: [Check(key: k("x"), versionstamp: nil)], mutations: [set("x", bytesValue("B"))])
        let c = AtomicWrite(checks: [Check(key: k("y"), versionstamp: nil)], mutations: [set("y", bytesValue("C"))])
        let r = submitTogether(store, [a, b, c])
        XCTAssertEqual(batchesCommitted, batchesBefore + 1, "one transaction for the batch")
        guard case .success(.committed(let va)) = r[0], case .success(.committed(let vc)) = r[2] else {
            return XCTFail("\(r)")
        }
        XCTAssertEqual(r[1], .success(.checkFailed(failedChecks: [0])))
        XCTAssertEqual(Versionstamps.counter(of: vc), Versionstamps.counter(of: va)! + 1)
        XCTAssertEqual(try store.get("x")?.value, bytesValue("A"))

        // B's check expects A's versionstamp: in the same batch it must see A's write.
        let vaPredicted = Versionstamps.make(counter: Versionstamps.counter(of: store.currentVersionstamp)! + 1)
        let a2 = AtomicWrite(mutations: [set("z", bytesValue("A2"))])
        let b2 = AtomicWrite(
            checks: [Check(key: k("z"), versionstamp: vaPredicted)], mutations: [set("z", bytesValue("B2"))])
        let r2 = submitTogether(store, [a2, b2])
        XCTAssertEqual(r2[0], .success(.committed(versionstamp: vaPredicted)))
        guard case .success(.committed) = r2[1] else { return XCTFail("\(r2)") }
        XCTAssertEqual(try store.get("z")?.value, bytesValue("B2"))
    }

    func testOnlyOneOfTwoConflictingWritersWins() throws {
        let vs = try store.commit([set("k", bytesValue("0"))])
        // Same batch.
        let w1 = AtomicWrite(checks: [Check(key: k("k"), versionstamp: vs)], mutations: [set("k", bytesValue("1"))])
        let w2 = AtomicWrite(checks: [Check(key: k("k"), versionstamp: vs)], mutations: [set("k", bytesValue("2"))])
        let r = submitTogether(store, [w1, w2])
        XCTAssertEqual(r.filter { if case .success(.committed) = $0 { return true } else { return false } }.count, 1)
        XCTAssertEqual(r[1], .success(.checkFailed(failedChecks: [0])))

        // From racing threads, many rounds.
        for round in 0..<20 {
            let cur = try XCTUnwrap(try store.get("k")).versionstamp
            let wins = Counter(), losses = Counter()
            let s = store!
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                let w = AtomicWrite(
                    checks: [Check(key: k("k"), versionstamp: cur)],
                    mutations: [set("k", bytesValue("r\(round)t\(i)"))])
                switch try? s.atomicWriteSync(w) {
                case .committed?: wins.add()
                case .checkFailed?: losses.add()
                case nil: break
                }
            }
            XCTAssertEqual(wins.value, 1)
            XCTAssertEqual(losses.value, 1)
        }
    }

    func testNoLostUpdatesUnderConcurrentCheckAndSet() throws {
        try store.commit([Mutation(key: k("ctr"), kind: .set(u64(0)))])
        let threads = 6, perThread = 25
        let successes = Counter(), conflicts = Counter()
        let s = store!
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            var done = 0
            while done < perThread {
                guard let e = try? s.get("ctr"), let cur = WriteEvaluator.le64(e.value) else { return }
                let w = AtomicWrite(
                    checks: [Check(key: k("ctr"), versionstamp: e.versionstamp)],
                    mutations: [Mutation(key: k("ctr"), kind: .set(u64(cur + 1)))])
                switch try? s.atomicWriteSync(w) {
                case .committed?:
                    successes.add()
                    done += 1
                case .checkFailed?: conflicts.add()
                case nil: return
                }
            }
        }
        XCTAssertEqual(successes.value, threads * perThread)
        XCTAssertEqual(WriteEvaluator.le64(try XCTUnwrap(try store.get("ctr")).value), UInt64(successes.value))
    }

    func testManyConcurrentWritesAreGroupCommitted() throws {
        let threads = 8, perThread = 100
        let batchesBefore = batchesCommitted
        let s = store!
        let done = DispatchGroup()
        let versionstamps = Counter()
        let all = Mutex<[Versionstamp]>([])
        for t in 0..<threads {
            for i in 0..<perThread {
                done.enter()
                s.atomicWrite(
                    AtomicWrite(mutations: [
                        Mutation(key: k("sum"), kind: .sum(u64(1), min: nil, max: nil, clamp: false)),
                        set("t\(t)/\(i)", bytesValue("x"))
                    ])
                ) { r in
                    if case .success(.committed(let vs)) = r {
                        versionstamps.add()
                        all.withLock { $0.append(vs) }
                    }
                    done.leave()
                }
            }
        }
        done.wait()
        XCTAssertEqual(versionstamps.value, threads * perThread)
        XCTAssertEqual(Set(all.withLock { $0 }).count, threads * perThread, "every write has its own versionstamp")
        XCTAssertEqual(try store.get("sum")?.value, u64(UInt64(threads * perThread)))
        let batches = batchesCommitted - batchesBefore
        XCTAssertLessThan(batches, threads * perThread, "writes were batched")
        let r = try store.snapshotRead([ReadRange(start: k("t"), end: k("u"), limit: 10_000)])
        XCTAssertEqual(r[0].count, threads * perThread)
    }

    func testMaxBatchSizeRespected() throws {
        try reopen(SQLiteStoreOptions(maxBatchSize: 3))
        let before = batchesCommitted
        let writes = (0..<7).map { AtomicWrite(mutations: [set("m\($0)", bytesValue("x"))]) }
        let r = submitTogether(store, writes)
        XCTAssertEqual(r.count, 7)
        XCTAssertEqual(batchesCommitted - before, 3)  // 3 + 3 + 1
        // Versionstamps strictly increase in submission order.
        let counters = r.compactMap { res -> UInt64? in
            if case .success(.committed(let vs)) = res { return Versionstamps.counter(of: vs) }
            return nil
        }
        XCTAssertEqual(counters, counters.sorted())
        XCTAssertEqual(Set(counters).count, 7)
    }

    func testCloseDrainsPendingWrites() throws {
        let s = store!
        let completed = Counter()
        let n = 300
        for i in 0..<n {
            s.atomicWrite(AtomicWrite(mutations: [set("d\(i)", bytesValue("x"))])) { r in
                if case .success(.committed) = r { completed.add() }
            }
        }
        s.close()
        XCTAssertEqual(completed.value, n, "all pending completions called before close returns")
        let late = ResultBox<Result<AtomicWriteResult, KVError>>()
        s.atomicWrite(AtomicWrite(mutations: [set("late", bytesValue("x"))])) { late.set($0) }
        XCTAssertEqual(late.wait(), .failure(.unavailable("shutting down")))
        store = try tmp.openStore()
        let r = try store.snapshotRead([ReadRange(start: k("d"), end: k("e"), limit: 10_000)])
        XCTAssertEqual(r[0].count, n)
        XCTAssertNil(try store.get("late"))
    }

    func testSnapshotReadsAreConsistentDuringWrites() throws {
        // Two keys always written together: every snapshot sees equal values.
        try store.commit([Mutation(key: k("p"), kind: .set(u64(0))), Mutation(key: k("q"), kind: .set(u64(0)))])
        let s = store!
        let stop = Counter()
        let readerErrors = Counter()
        let reader = Thread {
            while stop.value == 0 {
                guard
                    let r = try? s.snapshotRead([
                        ReadRange(start: k("p"), end: k("p\u{0}"), limit: 1),
                        ReadRange(start: k("q"), end: k("q\u{0}"), limit: 1)
                    ])
                else {
                    readerErrors.add()
                    continue
                }
                if r[0].first?.value != r[1].first?.value || r[0].first?.versionstamp != r[1].first?.versionstamp {
                    readerErrors.add()
                }
            }
        }
        reader.start()
        for i in 1...200 {
            try store.commit([
                Mutation(key: k("p"), kind: .set(u64(UInt64(i)))),
                Mutation(key: k("q"), kind: .set(u64(UInt64(i))))
            ])
        }
        stop.add()
        Thread.sleep(forTimeInterval: 0.05)
        XCTAssertEqual(readerErrors.value, 0)
    }
}

final class WriterThreadTests: KVTestCase {
    func testCompletionRunsOnWriterThreadAndSyncWriteThereFails() throws {
        try requireSQLite("SQLiteStore.atomicWriteSync guards its writer thread")
        let s = sqlite
        let box = ResultBox<String>()
        s.atomicWrite(AtomicWrite(mutations: [set("a", bytesValue("1"))])) { _ in
            // Thread names are not reliable on Linux; ask the store itself.
            let name = s.core.isWriterThread ? "writer" : "other thread"
            do {
                _ = try s.atomicWriteSync(AtomicWrite())
                box.set("no error on \(name)")
            } catch {
                box.set("\(name): \(error)")
            }
        }
        XCTAssertEqual(box.wait(), "writer: internalError(\"atomicWriteSync called on the writer thread\")")
    }

    func testCloseFromCompletionDoesNotDeadlock() throws {
        let s = store!
        let box = ResultBox<Bool>()
        s.atomicWrite(AtomicWrite(mutations: [set("a", bytesValue("1"))])) { _ in
            s.close()
            box.set(true)
        }
        XCTAssertTrue(box.wait())
        s.close()
        XCTAssertEqual(s.writeError([set("b", bytesValue("1"))]), .unavailable("shutting down"))
    }
}
