import Foundation
import XCTest
@testable import KVPostgres
import KVEngine

/// Two PostgresStore instances on one database stand for two daemons.
final class MultiDaemonTests: PGTestCase {
    func testVersionstampsFollowCommitOrderAcrossDaemons() throws {
        let a = try open(), b = try open()
        XCTAssertEqual(a.databaseId, b.databaseId)
        // Each write checks the counter key's current versionstamp and bumps
        // it: a successful write's versionstamp must exceed the one it saw.
        let n = 200
        let seen = Locked<[(Versionstamp, Versionstamp)]>([])
        let all = Locked<[Versionstamp]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            let s = t % 2 == 0 ? a : b
            for i in 0..<(n / 8) {
                let cur = (try? s.get("chain"))??.versionstamp
                if let r = try? s.sync(
                    AtomicWrite(
                        checks: [Check(key: k("chain"), versionstamp: cur)],
                        mutations: [set("chain", bytesValue("\(t)-\(i)")), set("w\(t)-\(i)", bytesValue(""))])),
                    case .committed(let vs) = r
                {
                    seen.with { $0.append((cur ?? [], vs)) }
                    all.with { $0.append(vs) }
                } else if let r = try? s.sync(AtomicWrite(mutations: [set("w\(t)-\(i)", bytesValue(""))])),
                    case .committed(let vs) = r
                {
                    all.with { $0.append(vs) }
                }
            }
        }
        XCTAssertEqual(Set(all.value).count, all.value.count, "no versionstamp handed out twice")
        XCTAssertGreaterThan(seen.value.count, 0)
        for (before, after) in seen.value {
            XCTAssertTrue(before.lexicographicallyPrecedes(after), "versionstamp grows along the chain")
        }
        // The chain's successful writes, sorted by versionstamp, each saw the previous one.
        let chain = seen.value.sorted { $0.1.lexicographicallyPrecedes($1.1) }
        for (p, q) in zip(chain, chain.dropFirst()) { XCTAssertEqual(q.0, p.1, "no commit slipped in between") }
    }

    func testReadThroughBSeesWriteAcknowledgedByA() throws {
        let a = try open(), b = try open()
        for i in 0..<200 {
            let vs = try a.commit([set("ryw", bytesValue("\(i)"))])
            XCTAssertEqual(try b.get("ryw")?.versionstamp, vs, "iteration \(i)")
        }
    }

    func testWatchOnBWokenByCommitOnAWithinMilliseconds() throws {
        let a = try open(), b = try open()
        var latencies: [Double] = []
        for i in 0..<30 {
            let woke = Box<UInt64>()
            let w = b.watch(keys: [k("w")]) { woke.set(DispatchTime.now().uptimeNanoseconds) }
            let t0 = DispatchTime.now().uptimeNanoseconds
            try a.commit([set("w", bytesValue("\(i)"))])
            let t1 = try XCTUnwrap(woke.wait(seconds: 5), "watch on B not woken")
            latencies.append(Double(t1 &- t0) / 1e6)
            w.cancel()
        }
        latencies.sort()
        let p50 = latencies[latencies.count / 2], p95 = latencies[latencies.count * 95 / 100]
        print("PG cross-daemon watch wake-up (commit start → watcher on B): p50 \(p50) ms, p95 \(p95) ms")
        XCTAssertLessThan(p50, 100, "milliseconds, not polling")
        // A key nobody changed does not wake.
        let quiet = Box<Bool>()
        let w = b.watch(keys: [k("other")]) { quiet.set(true) }
        try a.commit([set("w", bytesValue("x"))])
        XCTAssertNil(quiet.wait(seconds: 0.3))
        w.cancel()
    }

    func testCommitOfMoreKeysThanANotificationHoldsWakesWatchersOnB() throws {
        let a = try open(), b = try open()
        let woken = Box<Bool>()
        let w = b.watch(keys: [k("many-799")]) { woken.set(true) }
        defer { w.cancel() }
        let keys = (0..<800).map { "many-\($0)" }
        let n = PGNotification(sender: "x", counter: 1, earliestExpiryMs: nil, earliestDueMs: nil, keys: keys.map(k))
        XCTAssertTrue(n.payload.hasSuffix(";*"), "too many keys for one NOTIFY: B must wake every watcher")
        try a.commit(keys.map { set($0, bytesValue("v")) })
        XCTAssertEqual(woken.wait(seconds: 5), true)
    }

    func testCheckAndSetLosesNoUpdateAcrossDaemons() throws {
        let a = try open(), b = try open()
        try a.commit([Mutation(key: k("n"), kind: .set(u64(0)))])
        let successes = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            let s = t % 2 == 0 ? a : b
            var mine = 0
            while mine < 15 {
                guard let cur = try? s.get("n"), let x = readU64(cur.value) else { continue }
                if case .committed? = try? s.sync(
                    AtomicWrite(
                        checks: [Check(key: k("n"), versionstamp: cur.versionstamp)],
                        mutations: [Mutation(key: k("n"), kind: .set(u64(x + 1)))]))
                {
                    mine += 1
                }
            }
            successes.with { $0 += mine }
        }
        XCTAssertEqual(readU64(try a.get("n")?.value), UInt64(successes.value))
        XCTAssertEqual(successes.value, 120)
    }

    func testSumsFromBothDaemonsAllCount() throws {
        let a = try open(), b = try open()
        let done = DispatchGroup()
        for i in 0..<300 {
            done.enter()
            (i % 2 == 0 ? a : b).atomicWrite(
                AtomicWrite(mutations: [Mutation(key: k("sum"), kind: .sum(u64(1), min: nil, max: nil, clamp: false))])
            ) { r in
                if case .failure(let e) = r { XCTFail("\(e)") }
                done.leave()
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(readU64(try b.get("sum")?.value), 300)
    }

    func testExactlyOneDaemonSweepsAndWatchersEverywhereWake() throws {
        let a = try open(), b = try open()
        let t = nowMs() + 400
        try a.commit((0..<50).map { set("x\($0)", bytesValue("v"), expireAtMs: t) })
        let wokeA = Box<Bool>(), wokeB = Box<Bool>()
        let wa = a.watch(keys: [k("x7")]) { wokeA.set(true) }
        let wb = b.watch(keys: [k("x7")]) { wokeB.set(true) }
        defer {
            wa.cancel()
            wb.cancel()
        }
        XCTAssertEqual(wokeA.wait(seconds: 10), true)
        XCTAssertEqual(wokeB.wait(seconds: 10), true)
        let deadline = Date().addingTimeInterval(10)
        while a.expiredEntriesRemoved + b.expiredEntriesRemoved < 50 && Date() < deadline { usleep(20_000) }
        XCTAssertEqual(a.expiredEntriesRemoved + b.expiredEntriesRemoved, 50, "each expired row deleted exactly once")
        XCTAssertEqual(try admin().query("SELECT count(*) FROM entries").int64(0, 0), 0)
    }

    func testEachMessageClaimedOnceAcrossDaemons() throws {
        let a = try open(), b = try open()
        let n = 200
        for i in 0..<n { try (i % 2 == 0 ? a : b).enqueue(Array("m\(i)".utf8)) }
        let claimed = Locked<[Int64]>([])
        let pushed = Locked<[Int64]>([])
        // Push on A, pull workers on both.
        a.startQueueDelivery(options: QueuePushOptions(concurrency: 4, leaseMs: 30_000)) { m, done in
            pushed.with { $0.append(m.id) }
            done(true)
        }
        DispatchQueue.concurrentPerform(iterations: 6) { t in
            let s = t % 2 == 0 ? a : b
            while true {
                guard let m = try? s.lease(waitMs: 300) else { break }
                claimed.with { $0.append(m.id) }
                XCTAssertEqual(try? s.ack(m), .acknowledged)
            }
        }
        let deadline = Date().addingTimeInterval(20)
        while claimed.value.count + pushed.value.count < n && Date() < deadline { usleep(20_000) }
        XCTAssertTrue(a.stopQueueDelivery(drainTimeoutMs: 5000))
        let ids = claimed.value + pushed.value
        XCTAssertEqual(ids.count, n, "pulled \(claimed.value.count), pushed \(pushed.value.count)")
        XCTAssertEqual(Set(ids).count, n, "no message handed out twice")
        XCTAssertEqual(try a.queueCounts(), QueueCounts(ready: 0, inflight: 0))
    }

    func testPullLeaseOnASettledThroughB() throws {
        let a = try open(), b = try open()
        try a.enqueue([1], keys: [k("dead")], backoff: [10])
        let m1 = try XCTUnwrap(try a.lease())
        guard case .retryScheduled = try b.fail(m1) else { return XCTFail("fail through B") }
        let m2 = try XCTUnwrap(try b.lease(waitMs: 5000), "B's dispatcher wakes at the retry time")
        XCTAssertEqual(m2.attempt, 2)
        XCTAssertEqual(try a.ack(m1), .leaseLost)
        guard case .deadLettered(let vs?) = try a.fail(m2) else { return XCTFail("dead letter through A") }
        XCTAssertEqual(try b.get("dead")?.versionstamp, vs)
        try b.enqueue([2])
        let m3 = try XCTUnwrap(try b.lease(waitMs: 5000))
        XCTAssertEqual(try a.ack(m3), .acknowledged)
        XCTAssertEqual(try b.queueCounts(), QueueCounts(ready: 0, inflight: 0))
    }

    func testPushedMessagesOfAStoppedDaemonAreRecoveredByAnother() throws {
        let a = try open()
        try a.enqueue([1])
        let taken = Box<QueueMessage>()
        // A claims the message and never settles it (it "dies" while pushing).
        a.startQueueDelivery(options: QueuePushOptions(concurrency: 1, leaseMs: 600_000)) { m, _ in taken.set(m) }
        let m = try XCTUnwrap(taken.wait(seconds: 10))
        XCTAssertEqual(try a.queueCounts(), QueueCounts(ready: 0, inflight: 1))
        a.close()  // its connections go away: its liveness lock is free

        let b = try open()
        let got = Box<QueueMessage>()
        let t0 = Date()
        b.startQueueDelivery(options: QueuePushOptions(concurrency: 1, leaseMs: 30_000)) { m, done in
            got.set(m)
            done(true)
        }
        let again = try XCTUnwrap(
            got.wait(seconds: 15), "B redelivers A's message without waiting for the 10-minute lease")
        XCTAssertEqual(again.id, m.id)
        XCTAssertEqual(again.attempt, 1)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
        XCTAssertTrue(b.stopQueueDelivery(drainTimeoutMs: 5000))
    }

    func testLiveDaemonsPushedMessagesAreNotStolen() throws {
        let a = try open(), b = try open()
        try a.enqueue([1])
        let taken = Box<QueueMessage>()
        a.startQueueDelivery(options: QueuePushOptions(concurrency: 1, leaseMs: 600_000)) { m, _ in taken.set(m) }
        XCTAssertNotNil(taken.wait(seconds: 10))
        let got = Box<QueueMessage>()
        b.startQueueDelivery(options: QueuePushOptions(concurrency: 1, leaseMs: 30_000)) { m, done in
            got.set(m)
            done(true)
        }
        XCTAssertNil(got.wait(seconds: 3), "A is alive: its delivery is not repeated")
        b.stopQueueDelivery(drainTimeoutMs: 1000)
    }
}

/// The store sets its own isolation level: a server whose default is
/// SERIALIZABLE changes nothing (no spurious failures, no lost updates).
final class IsolationDefaultTests: PGTestCase {
    func testServerDefaultSerializableDoesNotMatter() throws {
        let sep = url.contains("?") ? "&" : "?"
        url += sep + "options=-c%20default_transaction_isolation%3Dserializable"
        let a = try open(), b = try open()
        let probe = try PGConnection(conninfo: url, searchPath: schema)
        XCTAssertEqual(try probe.query("SHOW default_transaction_isolation").text(0, 0), "serializable")
        let done = DispatchGroup()
        let failures = Locked(0)
        for i in 0..<200 {
            done.enter()
            let m = Mutation(key: k("n"), kind: .sum(u64(1), min: nil, max: nil, clamp: false))
            (i % 2 == 0 ? a : b).atomicWrite(AtomicWrite(mutations: [m, set("k\(i % 7)", bytesValue("\(i)"))])) { r in
                if case .failure = r { failures.with { $0 += 1 } }
                done.leave()
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(failures.value, 0)
        XCTAssertEqual(readU64(try a.get("n")?.value), 200)
    }
}
