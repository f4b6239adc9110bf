import Foundation
import Threading
import XCTest
@testable import KVEngine
@testable import KVSQLite

final class QueueTests: KVTestCase {
    private func enqueue(
        _ payload: Bytes = V8Codec.encode(.number(1)), deadlineMs: Int64 = 0,
        keys: [Bytes] = [], backoff: [UInt32] = []
    ) throws {
        let r = try store.atomicWriteSync(
            AtomicWrite(enqueues: [
                Enqueue(payload: payload, deadlineMs: deadlineMs, keysIfUndelivered: keys, backoffSchedule: backoff)
            ]))
        guard case .committed = r else { return XCTFail("enqueue not committed: \(r)") }
    }

    private func lease(visibilityMs: Int64 = 30_000, waitMs: Int64 = 0) throws -> QueueMessage? {
        let box = ResultBox<Result<QueueMessage?, KVError>>()
        store.leaseQueueMessage(visibilityMs: visibilityMs, waitMs: waitMs) { box.set($0) }
        return try box.wait().get()
    }

    private func ack(_ m: QueueMessage) throws -> QueueSettleResult {
        let box = ResultBox<Result<QueueSettleResult, KVError>>()
        store.ackQueueMessage(id: m.id, leaseSeq: m.leaseSeq) { box.set($0) }
        return try box.wait().get()
    }

    private func fail(_ m: QueueMessage) throws -> QueueSettleResult {
        let box = ResultBox<Result<QueueSettleResult, KVError>>()
        store.failQueueMessage(id: m.id, leaseSeq: m.leaseSeq) { box.set($0) }
        return try box.wait().get()
    }

    func testMessageIsNotHandedOutBeforeItsDeadline() throws {
        let deadline = nowMs() + 300
        try enqueue(deadlineMs: deadline)
        XCTAssertNil(try lease(waitMs: 0))
        let m = try XCTUnwrap(try lease(waitMs: 3000))
        let got = nowMs()
        XCTAssertGreaterThanOrEqual(got, deadline)
        XCTAssertLessThan(got, deadline + 250, "the dispatcher wakes at the deadline")
        XCTAssertEqual(m.attempt, 1)
        XCTAssertEqual(m.payload, V8Codec.encode(.number(1)))
        XCTAssertEqual(try ack(m), .acknowledged)
        XCTAssertEqual(try store.queuedMessageCount(), 0)
        XCTAssertEqual(try ack(m), .notFound)
    }

    func testLongPollTimesOutWithNothing() throws {
        let t0 = nowMs()
        XCTAssertNil(try lease(waitMs: 200))
        let dt = nowMs() - t0
        XCTAssertGreaterThanOrEqual(dt, 190)
        XCTAssertLessThan(dt, 1500)
    }

    func testMessagesComeOutInDeadlineOrder() throws {
        let now = nowMs()
        try enqueue(V8Codec.encode(.number(2)), deadlineMs: now - 10)
        try enqueue(V8Codec.encode(.number(1)), deadlineMs: now - 20)
        XCTAssertEqual(try lease()?.payload, V8Codec.encode(.number(1)))
        XCTAssertEqual(try lease()?.payload, V8Codec.encode(.number(2)))
        XCTAssertNil(try lease())
    }

    func testBackoffProgressionThenDeadLetter() throws {
        try enqueue(keys: [k("dead")], backoff: [100, 250])
        let m1 = try XCTUnwrap(try lease())
        XCTAssertEqual(m1.attempt, 1)
        let t1 = nowMs()
        guard case .retryScheduled(let at1) = try fail(m1) else { return XCTFail("expected retry") }
        XCTAssert((t1 + 100...t1 + 150).contains(at1), "first retry after 100 ms")
        XCTAssertNil(try lease(), "not before the retry delay")
        let m2 = try XCTUnwrap(try lease(waitMs: 2000))
        XCTAssertGreaterThanOrEqual(nowMs(), at1)
        XCTAssertEqual(m2.attempt, 2)
        XCTAssertEqual(m2.id, m1.id)
        let t2 = nowMs()
        guard case .retryScheduled(let at2) = try fail(m2) else { return XCTFail("expected retry") }
        XCTAssert((t2 + 250...t2 + 300).contains(at2), "second retry after 250 ms")
        let m3 = try XCTUnwrap(try lease(waitMs: 2000))
        XCTAssertGreaterThanOrEqual(nowMs(), at2)
        XCTAssertEqual(m3.attempt, 3)
        guard case .deadLettered(let vs) = try fail(m3) else { return XCTFail("expected dead letter") }
        XCTAssertNotNil(vs)
        XCTAssertEqual(try store.queuedMessageCount(), 0)
        XCTAssertEqual(store.queueStats.failedAttempts, 3)
        XCTAssertEqual(store.queueStats.deadLettered, 1)
    }

    func testEmptyScheduleDeadLettersAfterOneFailureWithVersionstampAndWatchers() throws {
        let payload = V8Codec.encode(.number(42))
        let before = try store.commit([set("other", bytesValue("x"))])
        try enqueue(payload, keys: [k("dl/a"), k("dl/b")], backoff: [])
        let enqueueVs = store.currentVersionstamp
        let woke = ResultBox<Bool>()
        let w = store.watch(keys: [k("dl/b")]) { woke.set(true) }
        defer { w.cancel() }
        let m = try XCTUnwrap(try lease())
        guard case .deadLettered(let vsOpt) = try fail(m), let vs = vsOpt else {
            return XCTFail("expected dead letter")
        }
        XCTAssertGreaterThan(Versionstamps.counter(of: vs)!, Versionstamps.counter(of: enqueueVs)!)
        XCTAssertGreaterThan(Versionstamps.counter(of: vs)!, Versionstamps.counter(of: before)!)
        XCTAssertEqual(store.currentVersionstamp, vs)
        for key in ["dl/a", "dl/b"] {
            let e = try XCTUnwrap(try store.get(key))
            XCTAssertEqual(e.value, KVValue(data: payload, encoding: .v8))
            XCTAssertEqual(e.versionstamp, vs)
        }
        XCTAssertEqual(woke.wait(timeoutMs: 2_000), true, "watchers see the dead letter")
        // The counter is shared with atomic writes.
        let after = try store.commit([set("later", bytesValue("y"))])
        XCTAssertEqual(Versionstamps.counter(of: after)!, Versionstamps.counter(of: vs)! + 1)
        XCTAssertEqual(try store.queuedMessageCount(), 0)
    }

    func testDeadLetterWithoutKeysJustRemoves() throws {
        try enqueue()
        let m = try XCTUnwrap(try lease())
        let vs = store.currentVersionstamp
        XCTAssertEqual(try fail(m), .deadLettered(versionstamp: nil))
        XCTAssertEqual(store.currentVersionstamp, vs)
        XCTAssertEqual(try store.queuedMessageCount(), 0)
    }

    func testExpiredLeaseMakesTheMessageReadyAgain() throws {
        try enqueue()
        let m1 = try XCTUnwrap(try lease(visibilityMs: 150))
        XCTAssertNil(try lease(), "in flight: not handed out twice")
        let m2 = try XCTUnwrap(try lease(waitMs: 3000))
        XCTAssertEqual(m2.id, m1.id)
        XCTAssertEqual(m2.leaseSeq, m1.leaseSeq + 1)
        XCTAssertEqual(m2.attempt, 1, "an expired lease is not a failed attempt")
        XCTAssertEqual(try ack(m1), .leaseLost)
        XCTAssertEqual(try fail(m1), .leaseLost)
        XCTAssertEqual(try ack(m2), .acknowledged)
        XCTAssertEqual(try ack(m2), .notFound)
        XCTAssertGreaterThanOrEqual(store.queueStats.leasesExpired, 1)
    }

    func testPoisonMessageIsDeadLetteredAfterMaxLeases() throws {
        try reopen(SQLiteStoreOptions(queueMaxLeases: 2))
        try enqueue(deadlineMs: 0, keys: [k("poison")], backoff: [10, 10])
        let m1 = try XCTUnwrap(try lease(visibilityMs: 100))
        let m2 = try XCTUnwrap(try lease(visibilityMs: 100, waitMs: 3000), "one expired lease: leased again")
        XCTAssertEqual(m2.id, m1.id)
        Thread.sleep(forTimeInterval: 0.15)
        XCTAssertNil(try lease(waitMs: 100), "the second expired lease dead-letters it")
        XCTAssertEqual(try store.readKeys([k("poison")]).first??.value.data, m1.payload)
        XCTAssertEqual(store.queueStats.poisoned, 1)
        XCTAssertEqual(store.queueStats.deadLettered, 1)
        XCTAssertEqual(try ack(m2), .notFound)
    }

    func testMessageIdsAreNeverReused() throws {
        try enqueue()
        let first = try XCTUnwrap(try lease())
        XCTAssertEqual(try ack(first), .acknowledged)
        try enqueue()
        let second = try XCTUnwrap(try lease())
        XCTAssertGreaterThan(second.id, first.id, "a settled message's id is not handed out again")
        XCTAssertEqual(try ack(first), .notFound, "the old lease handle cannot settle the new message")
    }

    func testAdministrationOverviewListDeleteAndPurge() throws {
        let now = nowMs()
        try enqueue(V8Codec.encode(.number(1)), deadlineMs: now - 5)
        try enqueue(V8Codec.encode(.number(2)), deadlineMs: now + 3_600_000, keys: [k("dl")], backoff: [1, 2])
        try enqueue(V8Codec.encode(.number(3)), deadlineMs: now - 1)
        let leased = try XCTUnwrap(try lease())
        var o = try store.queueOverview(nowMs: nowMs())
        XCTAssertEqual([o.ready, o.delayed, o.inflight], [1, 1, 1])
        XCTAssertEqual(o.oldestDueMs, now - 1)
        let page = try store.listQueueMessages(afterId: 0, limit: 2, nowMs: nowMs())
        XCTAssertEqual(page.map(\.state), [.inflight, .delayed])
        XCTAssertEqual(page[0].id, leased.id)
        XCTAssertEqual(page[0].leases, 1)
        XCTAssertEqual(page[1].keysIfUndelivered, [k("dl")])
        XCTAssertEqual(page[1].backoffSchedule, [1, 2])
        let rest = try store.listQueueMessages(afterId: page[1].id, limit: 10, nowMs: nowMs())
        XCTAssertEqual(rest.map(\.state), [.ready])
        XCTAssertEqual(try store.queueMessage(id: page[1].id, nowMs: nowMs()), page[1])
        XCTAssertNil(try store.queueMessage(id: 999, nowMs: nowMs()))

        let box = ResultBox<Result<Int, KVError>>()
        store.deleteQueueMessages(ids: [page[1].id, 999]) { box.set($0) }
        XCTAssertEqual(try box.wait().get(), 1)
        XCTAssertNil(try store.readKeys([k("dl")]).first!, "deleting does not dead-letter")
        let purge = ResultBox<Result<Int, KVError>>()
        store.deleteQueueMessages(ids: nil) { purge.set($0) }
        XCTAssertEqual(try purge.wait().get(), 2)
        o = try store.queueOverview(nowMs: nowMs())
        XCTAssertEqual(o, QueueOverview())
        XCTAssertEqual(try ack(leased), .notFound)
    }

    func testRestartMakesInflightMessagesReady() throws {
        // PostgreSQL: other daemons may still hold those leases; pull leases
        // end by time, pushed messages of a stopped daemon are recovered by
        // the others (KVPostgresTests.MultiDaemonTests).
        try requireSQLite("on PostgreSQL a restart does not end other daemons' leases")
        for i in 0..<3 { try enqueue(V8Codec.encode(.number(Double(i)))) }
        _ = try XCTUnwrap(try lease(visibilityMs: 600_000))
        _ = try XCTUnwrap(try lease(visibilityMs: 600_000))
        XCTAssertEqual(try store.queueCounts(), QueueCounts(ready: 1, inflight: 2))
        try reopen()
        XCTAssertEqual(store.queueRecoveredOnOpen, 2)
        XCTAssertEqual(try store.queueCounts(), QueueCounts(ready: 3, inflight: 0))
        var seen = Set<Int64>()
        while let m = try lease() {
            seen.insert(m.id)
            XCTAssertEqual(try ack(m), .acknowledged)
        }
        XCTAssertEqual(seen.count, 3)
    }

    func testConcurrentPullWorkersNeverShareAMessage() throws {
        let n = 200
        _ = try store.atomicWriteSync(
            AtomicWrite(
                enqueues: (0..<n).map {
                    Enqueue(
                        payload: V8Codec.encode(.number(Double($0))), deadlineMs: 0, keysIfUndelivered: [],
                        backoffSchedule: [])
                }))
        let ids = IDList()
        let store = self.store!
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            while true {
                let box = ResultBox<Result<QueueMessage?, KVError>>()
                store.leaseQueueMessage(visibilityMs: 60_000, waitMs: 0) { box.set($0) }
                guard case .success(let m?) = box.wait() else { return }
                ids.append(m.id)
                let a = ResultBox<Result<QueueSettleResult, KVError>>()
                store.ackQueueMessage(id: m.id, leaseSeq: m.leaseSeq) { a.set($0) }
                _ = a.wait()
            }
        }
        XCTAssertEqual(ids.all.count, n)
        XCTAssertEqual(Set(ids.all).count, n)
        XCTAssertEqual(try store.queuedMessageCount(), 0)
    }

    func testPushRespectsConcurrencyAndRetries() throws {
        let n = 40
        let state = PushRecorder()
        store.startQueueDelivery(options: QueuePushOptions(concurrency: 4, leaseMs: 60_000)) { m, done in
            state.begin(m)
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(10)) {
                state.end()
                done(m.attempt > 1 || m.id % 2 == 0)  // odd ids fail once
            }
        }
        _ = try store.atomicWriteSync(
            AtomicWrite(
                enqueues: (0..<n).map { _ in
                    Enqueue(
                        payload: [0xff, 0x0f, 0x49, 0x02], deadlineMs: 0, keysIfUndelivered: [], backoffSchedule: [20])
                }))
        let deadline = Date().addingTimeInterval(20)
        while store.queueStats.acknowledged < n && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(store.queueStats.acknowledged, n)
        XCTAssertEqual(store.queueStats.failedAttempts, n / 2)
        XCTAssertLessThanOrEqual(state.maxConcurrent, 4)
        XCTAssertGreaterThan(state.maxConcurrent, 1)
        XCTAssertEqual(state.deliveries, n + n / 2)
        XCTAssertTrue(store.stopQueueDelivery())
        XCTAssertEqual(try store.queuedMessageCount(), 0)
    }

    func testPushWakesAtTheDeadline() throws {
        let got = ResultBox<Int64>()
        store.startQueueDelivery { _, done in
            got.set(nowMs())
            done(true)
        }
        let deadline = nowMs() + 300
        try enqueue(deadlineMs: deadline)
        let at = try XCTUnwrap(got.wait(timeoutMs: 5_000))
        XCTAssertGreaterThanOrEqual(at, deadline)
        XCTAssertLessThan(at, deadline + 250)
        store.stopQueueDelivery()
    }
}

final class PushRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var current = 0
    private(set) var maxConcurrent = 0
    private(set) var deliveries = 0
    func begin(_ m: QueueMessage) {
        lock.lock()
        current += 1
        deliveries += 1
        maxConcurrent = max(maxConcurrent, current)
        lock.unlock()
    }
    func end() {
        lock.lock()
        current -= 1
        lock.unlock()
    }
}

final class IDList: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: [Int64] = []
    func append(_ id: Int64) {
        lock.lock()
        ids.append(id)
        lock.unlock()
    }
    var all: [Int64] {
        lock.lock()
        defer { lock.unlock() }
        return ids
    }
}
