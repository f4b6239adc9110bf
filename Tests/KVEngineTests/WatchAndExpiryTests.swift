import CSQLite
import Foundation
import XCTest
@testable import KVEngine
@testable import KVSQLite

func waitUntil(_ timeout: TimeInterval = 5, _ cond: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(timeout)
    while Date() < end {
        if cond() { return true }
        usleep(5_000)
    }
    return cond()
}

final class WatchAndExpiryTests: KVTestCase {
    func testWatchWakesOnlyForItsKeys() throws {
        let a = Counter(), b = Counter()
        let wa = store.watch(keys: [k("a"), k("shared")]) { a.add() }
        let wb = store.watch(keys: [k("b"), k("shared")]) { b.add() }
        XCTAssertEqual(store.watchCount, 2)
        _ = try store.atomicWriteSync(AtomicWrite(mutations: [set("a", bytesValue("1"))]))
        XCTAssertEqual(a.value, 1)
        XCTAssertEqual(b.value, 0)
        _ = try store.atomicWriteSync(AtomicWrite(mutations: [set("unrelated", bytesValue("1"))]))
        XCTAssertEqual(a.value + b.value, 1)
        _ = try store.atomicWriteSync(
            AtomicWrite(mutations: [set("shared", bytesValue("1")), set("a", bytesValue("2"))]))
        XCTAssertEqual(a.value, 2, "one wake-up per commit, however many of its keys changed")
        XCTAssertEqual(b.value, 1)
        _ = try store.atomicWriteSync(AtomicWrite(mutations: [Mutation(key: k("b"), kind: .delete)]))
        XCTAssertEqual(b.value, 2, "a delete is a change")
        wa.cancel()
        wa.cancel()
        wb.cancel()
        XCTAssertEqual(store.watchCount, 0)
        _ = try store.atomicWriteSync(AtomicWrite(mutations: [set("shared", bytesValue("3"))]))
        XCTAssertEqual(a.value, 2)
        XCTAssertEqual(b.value, 2)
    }

    func testFailedWritesDoNotWake() throws {
        let c = Counter()
        let w = store.watch(keys: [k("x")]) { c.add() }
        defer { w.cancel() }
        _ = try store.atomicWriteSync(AtomicWrite(mutations: [set("x", bytesValue("not u64"))]))
        XCTAssertEqual(c.value, 1)
        XCTAssertThrowsError(
            try store.atomicWriteSync(
                AtomicWrite(mutations: [
                    set("x", bytesValue("y")),
                    Mutation(key: k("x"), kind: .sum(u64(1), min: nil, max: nil, clamp: false))
                ])))
        let r = try store.atomicWriteSync(
            AtomicWrite(checks: [Check(key: k("x"), versionstamp: nil)], mutations: [set("x", bytesValue("z"))]))
        XCTAssertEqual(r, .checkFailed(failedChecks: [0]))
        XCTAssertEqual(c.value, 1, "rejected and check-failed writes change nothing and wake nobody")
    }

    func testVersionstampedKeysNotifyTheirFinalKey() throws {
        let c = Counter()
        let r = try store.atomicWriteSync(
            AtomicWrite(mutations: [Mutation(key: k("p"), kind: .setSuffixVersionstampedKey(bytesValue("v")))]))
        guard case .committed(let vs) = r else { return XCTFail() }
        let next = Versionstamps.make(counter: Versionstamps.counter(of: vs)! + 1)
        let key = k("p") + [0x02] + Array(Versionstamps.hex(next).utf8) + [0x00]
        let w = store.watch(keys: [key]) { c.add() }
        defer { w.cancel() }
        _ = try store.atomicWriteSync(
            AtomicWrite(mutations: [Mutation(key: k("p"), kind: .setSuffixVersionstampedKey(bytesValue("v")))]))
        XCTAssertEqual(c.value, 1)
    }

    func testReadKeysIsOneSnapshot() throws {
        _ = try store.atomicWriteSync(AtomicWrite(mutations: [set("a", bytesValue("1")), set("c", bytesValue("3"))]))
        let got = try store.readKeys([k("a"), k("b"), k("c")])
        XCTAssertEqual(got.map { $0?.value.data }, [k("1"), nil, k("3")])
        XCTAssertEqual(got[0]?.versionstamp, got[2]?.versionstamp)
    }

    func testSweeperDeletesExpiredEntriesAndWakesWatchers() throws {
        let c = Counter()
        let w = store.watch(keys: [k("soon")]) { c.add() }
        defer { w.cancel() }
        _ = try store.atomicWriteSync(
            AtomicWrite(mutations: [
                set("soon", bytesValue("x"), expireAtMs: nowMs() + 300),
                set("later", bytesValue("y"), expireAtMs: nowMs() + 3_600_000),
                set("never", bytesValue("z"))
            ]))
        XCTAssertEqual(c.value, 1)
        XCTAssertTrue(waitUntil(5) { store.expiredEntriesRemoved == 1 }, "the sweeper woke at the expiry time")
        XCTAssertEqual(c.value, 2, "deleting an expired entry is a change")
        XCTAssertNil(try store.get("soon", nowMs: 0), "row is gone, not only hidden")
        XCTAssertNotNil(try store.get("later"))
        XCTAssertNotNil(try store.get("never"))
    }

    func testBacklogAfterRestartIsReclaimedInBatchesWithoutBlockingWrites() throws {
        try requireSQLite("inspects the SQLite file directly")
        let n = ExpirySweeper.batchSize * 4 + 7
        let expiry = nowMs() + 400
        var muts: [Mutation] = []
        for i in 0..<n { muts.append(set("e\(i)", bytesValue("v"), expireAtMs: expiry)) }
        _ = try store.atomicWriteSync(AtomicWrite(mutations: Array(muts.prefix(900))))
        _ = try store.atomicWriteSync(AtomicWrite(mutations: Array(muts.dropFirst(900))))
        store.close()
        usleep(600_000)
        let all = ReadRange(start: k("e"), end: k("f"), limit: 100_000)
        let raw = try SQLiteConnection(path: tmp.path, flags: SQLITE_OPEN_READONLY)
        XCTAssertEqual(try raw.queryText("SELECT COUNT(*) FROM entries"), "\(n)", "a backlog exists at reopen")
        raw.close()
        let t0 = Date()
        store = try tmp.open()
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2, "open does not sweep synchronously")
        _ = try store.atomicWriteSync(AtomicWrite(mutations: [set("live", bytesValue("v"))]))
        XCTAssertTrue(try store.snapshotRead([all])[0].isEmpty, "expired entries are hidden at once")
        XCTAssertTrue(waitUntil(10) { store.expiredEntriesRemoved == n })
        XCTAssertTrue(try store.snapshotRead([all], nowMs: 0)[0].isEmpty, "and then deleted")
        XCTAssertNotNil(try store.get("live"))
    }
}
