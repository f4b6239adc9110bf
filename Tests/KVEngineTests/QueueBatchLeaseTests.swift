import Foundation
import XCTest
@testable import KVEngine
@testable import KVPostgres
@testable import KVSQLite
import Threading

/// The batch lease (`leaseQueueMessage(max:)`) and settles arriving together,
/// on every backend: SQLite and the in-memory storage always, PostgreSQL when
/// KVCONNECTD_TEST_PG_URL is set (`make test` starts a throwaway cluster).
class QueueBatchLeaseContract: XCTestCase {
    var store: (any KVStorage)!
    /// Poison limit of `store` (0 = none: the in-memory storage has none).
    var maxLeases: Int { 0 }

    func makeStore(maxLeases: Int) throws -> any KVStorage { fatalError("override") }

    override func setUpWithError() throws {
        if type(of: self) == QueueBatchLeaseContract.self { throw XCTSkip("the contract itself") }
        store = try makeStore(maxLeases: maxLeases)
    }

    override func tearDown() {
        store?.close()
        store = nil
    }

    func lease(max: Int, visibilityMs: Int64 = 30_000, waitMs: Int64 = 0) throws -> [QueueMessage] {
        try Self.lease(store, max: max, visibilityMs: visibilityMs, waitMs: waitMs)
    }

    static func lease(_ store: any KVStorage, max: Int, visibilityMs: Int64 = 30_000, waitMs: Int64 = 0) throws
        -> [QueueMessage]
    {
        let box = ResultBox<Result<[QueueMessage], KVError>>()
        store.leaseQueueMessage(visibilityMs: visibilityMs, waitMs: waitMs, max: max) { box.set($0) }
        return try XCTUnwrap(box.wait(timeoutMs: 10_000), "lease answered").get()
    }

    /// Settles all at once (they may share a transaction); results in order.
    func settle(_ ms: [QueueMessage], ack: Bool) throws -> [QueueSettleResult] {
        let results = Guarded<[Int: Result<QueueSettleResult, KVError>]>([:])
        let done = DispatchSemaphore(value: 0)
        for (i, m) in ms.enumerated() {
            let completion: @Sendable (Result<QueueSettleResult, KVError>) -> Void = { r in
                results.with { $0[i] = r }
                done.signal()
            }
            if ack {
                store.ackQueueMessage(id: m.id, leaseSeq: m.leaseSeq, completion: completion)
            } else {
                store.failQueueMessage(id: m.id, leaseSeq: m.leaseSeq, completion: completion)
            }
        }
        for _ in ms { XCTAssertEqual(done.wait(timeout: .now() + 10), .success) }
        return try (0..<ms.count).map { try XCTUnwrap(results.value[$0]).get() }
    }

    func enqueue(_ n: Int, deadlineMs: (Int) -> Int64, backoff: [UInt32] = [], keys: [Bytes] = []) throws {
        let r = try store.atomicWriteSync(
            AtomicWrite(
                enqueues: (0..<n).map {
                    Enqueue(
                        payload: [0xff, 0x0f, 0x49, UInt8($0 % 64 * 2)], deadlineMs: deadlineMs($0),
                        keysIfUndelivered: keys, backoffSchedule: backoff)
                }))
        guard case .committed = r else { return XCTFail("enqueue not committed: \(r)") }
    }

    func testBatchClaimsUpToMaxOldestDeadlineFirst() throws {
        let now = nowMs()
        try enqueue(5) { now - 1000 + Int64(4 - $0) }  // the last enqueued is the oldest
        let a = try lease(max: 3)
        XCTAssertEqual(a.count, 3)
        XCTAssertEqual(a.map(\.deadlineMs), a.map(\.deadlineMs).sorted(), "oldest deadline first")
        XCTAssertEqual(a.first?.deadlineMs, now - 1000)
        XCTAssertEqual(a.map(\.leaseSeq), [1, 1, 1])
        XCTAssertEqual(a.map(\.attempt), [1, 1, 1])
        let b = try lease(max: 256)
        XCTAssertEqual(b.count, 2, "only what is left")
        XCTAssertEqual(try lease(max: 8), [], "everything is in flight")
        XCTAssertEqual(Set((a + b).map(\.id)).count, 5)
        XCTAssertEqual(try store.queueCounts(), QueueCounts(ready: 0, inflight: 5))
        XCTAssertEqual(try settle(a + b, ack: true), Array(repeating: .acknowledged, count: 5))
        XCTAssertEqual(try settle(a, ack: true), Array(repeating: .notFound, count: 3))
        XCTAssertEqual(try store.queueCounts(), QueueCounts(ready: 0, inflight: 0))
    }

    func testBatchWaitsForTheFirstThenTakesOnlyWhatIsDue() throws {
        let now = nowMs()
        try enqueue(2) { $0 == 0 ? now + 1000 : now + 60_000 }
        if nowMs() < now + 900 { XCTAssertEqual(try lease(max: 4), [], "nothing due, no wait") }
        let got = try lease(max: 4, waitMs: 4000)
        XCTAssertEqual(got.count, 1, "the later message is not due")
        XCTAssertGreaterThanOrEqual(nowMs(), now + 1000, "not before it was due")
        XCTAssertLessThan(nowMs(), now + 3500, "answered when the first became due, not at the end of the wait")
        let t1 = nowMs()
        XCTAssertEqual(try lease(max: 4, waitMs: 200), [], "a long-poll with nothing due ends empty")
        XCTAssertGreaterThanOrEqual(nowMs() - t1, 190)
    }

    func testConcurrentBatchLeasesNeverShareAMessage() throws {
        let now = nowMs()
        try enqueue(60) { _ in now - 10 }
        let got = Guarded<[QueueMessage]>([])
        let store: any KVStorage = self.store
        DispatchQueue.concurrentPerform(iterations: 10) { _ in
            let ms = (try? Self.lease(store, max: 8, waitMs: 500)) ?? []
            got.with { $0 += ms }
        }
        let ids = got.value.map(\.id)
        XCTAssertEqual(ids.count, Set(ids).count, "no message leased twice")
        XCTAssertEqual(ids.count, 60, "10 × 8 leases take all 60")
        XCTAssertEqual(try settle(got.value, ack: true).filter { $0 == .acknowledged }.count, 60)
    }

    func testLeaseGenerationsAndFailedAttemptsInABatch() throws {
        let now = nowMs()
        try enqueue(3, deadlineMs: { _ in now - 10 }, backoff: [1])
        let first = try lease(max: 3, visibilityMs: 150)
        XCTAssertEqual(first.count, 3)
        // The leases end unsettled: ready again, same attempt, next lease generation.
        Thread.sleep(forTimeInterval: 0.3)
        let second = try lease(max: 3, waitMs: 2000)
        XCTAssertEqual(second.count, 3)
        XCTAssertEqual(second.map(\.leaseSeq), [2, 2, 2])
        XCTAssertEqual(second.map(\.attempt), [1, 1, 1], "an expired lease is not a failed attempt")
        XCTAssertEqual(try settle(first, ack: true), Array(repeating: .leaseLost, count: 3), "old generation")
        let failed = try settle(second, ack: false)
        XCTAssertEqual(failed.count, 3)
        for r in failed {
            guard case .retryScheduled = r else { return XCTFail("expected a retry, got \(r)") }
        }
        var third: [QueueMessage] = []
        let until = Date().addingTimeInterval(5)
        while third.count < 3 && Date() < until { third += try lease(max: 3, waitMs: 1000) }
        XCTAssertEqual(third.map(\.attempt), [2, 2, 2])
        XCTAssertEqual(third.map(\.leaseSeq), [3, 3, 3])
        XCTAssertEqual(
            try settle(third, ack: false), Array(repeating: .deadLettered(versionstamp: nil), count: 3),
            "schedule exhausted, no keys")
        XCTAssertEqual(try store.queueCounts(), QueueCounts(ready: 0, inflight: 0))
    }
}

/// Backends with a poison limit: a batch's leases count one by one.
class QueueBatchPoisonContract: QueueBatchLeaseContract {
    override var maxLeases: Int { 2 }

    override func setUpWithError() throws {
        if type(of: self) == QueueBatchPoisonContract.self { throw XCTSkip("the contract itself") }
        try super.setUpWithError()
    }

    func testPoisonLimitCountsEachLeaseOfABatch() throws {
        let now = nowMs()
        try enqueue(2, deadlineMs: { _ in now - 10 }, keys: [k("poisoned")])
        XCTAssertEqual(try lease(max: 2, visibilityMs: 100).count, 2)
        Thread.sleep(forTimeInterval: 0.25)
        let again = try lease(max: 2, visibilityMs: 100, waitMs: 2000)
        XCTAssertEqual(again.map(\.leaseSeq), [2, 2])
        Thread.sleep(forTimeInterval: 0.25)
        // The second lease of each ended unsettled too: dead-lettered, not leased a third time.
        XCTAssertEqual(try lease(max: 2, waitMs: 500), [])
        let until = Date().addingTimeInterval(5)
        while store.queueStats.poisoned < 2 && Date() < until { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertEqual(store.queueStats.poisoned, 2)
        XCTAssertNotNil(try store.readKeys([k("poisoned")])[0], "written to keysIfUndelivered")
        XCTAssertEqual(try store.queueCounts(), QueueCounts(ready: 0, inflight: 0))
    }
}

final class SQLiteQueueBatchLeaseTests: QueueBatchPoisonContract {
    let db = TempDB()
    override func makeStore(maxLeases: Int) throws -> any KVStorage {
        try db.open(SQLiteStoreOptions(queueMaxLeases: maxLeases))
    }

    /// A claim round does not wait for the disk, but leaves the connection
    /// as durable as it was for the writes after it.
    func testClaimRoundsRestoreFullSynchronous() throws {
        let now = nowMs()
        try enqueue(2) { _ in now - 10 }
        XCTAssertEqual(try lease(max: 2).count, 2)
        let sqlite = try XCTUnwrap(store as? SQLiteStore)
        let level = ResultBox<String?>()
        XCTAssertTrue(sqlite.core.onWriter { c in level.set(try? c.queryText("PRAGMA synchronous")) })
        XCTAssertEqual(level.wait(timeoutMs: 10_000) ?? nil, "2", "FULL again after the round")
    }
}

// (Each backend's class declares a test of its own: Linux test discovery
// only lists classes that do, inherited tests then run with them.)

final class MemoryQueueBatchLeaseTests: QueueBatchLeaseContract {
    override func makeStore(maxLeases: Int) throws -> any KVStorage { MemoryStorage() }

    func testClosingAnswersAWaitingBatchLease() throws {
        let box = ResultBox<Result<[QueueMessage], KVError>>()
        store.leaseQueueMessage(visibilityMs: 30_000, waitMs: 10_000, max: 8) { box.set($0) }
        store.close()
        let r = try XCTUnwrap(box.wait(timeoutMs: 5_000), "answered at close, not after the wait")
        XCTAssertEqual(try r.get(), [])
    }
}

final class PostgresQueueBatchLeaseTests: QueueBatchPoisonContract {
    let schema = "qb_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()

    override func makeStore(maxLeases: Int) throws -> any KVStorage {
        guard let url = ProcessInfo.processInfo.environment["KVCONNECTD_TEST_PG_URL"], !url.isEmpty else {
            throw XCTSkip("PostgreSQL: set KVCONNECTD_TEST_PG_URL (make test starts a throwaway cluster)")
        }
        return try PostgresStore(url: url, options: PostgresOptions(schema: schema, queueMaxLeases: maxLeases))
    }

    /// Two daemons on one database: `FOR UPDATE SKIP LOCKED` gives each
    /// message to one of them.
    func testTwoDaemonsBatchLeasesNeverShareAMessage() throws {
        let other = try makeStore(maxLeases: maxLeases)
        defer { other.close() }
        let now = nowMs()
        try enqueue(40) { _ in now - 10 }
        let got = Guarded<[QueueMessage]>([])
        let stores: [any KVStorage] = [store, other]
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let ms = (try? Self.lease(stores[i % 2], max: 8, waitMs: 500)) ?? []
            got.with { $0 += ms }
        }
        let ids = got.value.map(\.id)
        XCTAssertEqual(ids.count, Set(ids).count, "no message leased twice")
        XCTAssertEqual(ids.count, 40)
        XCTAssertEqual(try settle(got.value, ack: true), Array(repeating: .acknowledged, count: 40))
    }

    override func tearDown() {
        super.tearDown()
        if let url = ProcessInfo.processInfo.environment["KVCONNECTD_TEST_PG_URL"],
            let c = try? PGConnection(conninfo: url, searchPath: "public")
        {
            try? c.execScript("DROP SCHEMA IF EXISTS \(schema) CASCADE")
        }
    }
}

/// A value shared by test threads.
private final class Guarded<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    init(_ v: T) { self.v = v }
    func with<R>(_ f: (inout T) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return f(&v)
    }
    var value: T { with { $0 } }
}
