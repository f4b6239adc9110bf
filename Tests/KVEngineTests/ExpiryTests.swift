import Foundation
import XCTest
@testable import KVEngine
@testable import KVSQLite

final class ExpiryTests: KVTestCase {
    func testExpiredEntriesAreInvisibleToReads() throws {
        let now = nowMs()
        try store.commit([
            set("past", bytesValue("p"), expireAtMs: now - 1000),
            set("future", bytesValue("f"), expireAtMs: now + 60_000),
            set("never", bytesValue("n"))
        ])
        XCTAssertNil(try store.get("past"))
        XCTAssertEqual(try store.get("future")?.value, bytesValue("f"))
        XCTAssertEqual(try store.get("never")?.value, bytesValue("n"))
        let all = try store.snapshotRead([ReadRange(start: [], end: [0xFF], limit: 10)])[0]
        XCTAssertEqual(all.map(\.key), [k("future"), k("never")])

        // nowMs parameter: read as of a later time.
        XCTAssertNil(try store.get("future", nowMs: now + 60_000))
        XCTAssertNotNil(try store.get("future", nowMs: now + 59_999))
        XCTAssertNotNil(try store.get("never", nowMs: Int64.max))
        // (Whether "past" is still stored depends on the sweeper's timing:
        // see WatchAndExpiryTests for the sweeper itself.)
    }

    func testLimitCountsOnlyLiveEntries() throws {
        let now = nowMs()
        try store.commit([
            set("a", bytesValue("1"), expireAtMs: now - 1),
            set("b", bytesValue("2")),
            set("c", bytesValue("3"), expireAtMs: now - 1),
            set("d", bytesValue("4"))
        ])
        let r = try store.snapshotRead([ReadRange(start: [], end: [0xFF], limit: 2)])[0]
        XCTAssertEqual(r.map(\.key), [k("b"), k("d")])
    }

    func testSetWithoutExpiryClearsIt() throws {
        let now = nowMs()
        try store.commit([set("a", bytesValue("1"), expireAtMs: now + 10_000)])
        XCTAssertNil(try store.get("a", nowMs: now + 20_000))
        try store.commit([set("a", bytesValue("2"))])
        XCTAssertEqual(try store.get("a", nowMs: now + 20_000)?.value, bytesValue("2"))
    }

    func testChecksTreatExpiredAsAbsent() throws {
        let vs = try store.commit([set("a", bytesValue("1"), expireAtMs: nowMs() - 10)])
        // Its versionstamp no longer matches: the key is absent.
        let r1 = try store.atomicWriteSync(
            AtomicWrite(
                checks: [Check(key: k("a"), versionstamp: vs)],
                mutations: [set("x", bytesValue("1"))]))
        XCTAssertEqual(r1, .checkFailed(failedChecks: [0]))
        let r2 = try store.atomicWriteSync(
            AtomicWrite(
                checks: [Check(key: k("a"), versionstamp: nil)],
                mutations: [set("a", bytesValue("new"))]))
        guard case .committed = r2 else { return XCTFail("\(r2)") }
        XCTAssertEqual(try store.get("a")?.value, bytesValue("new"))
    }

    func testNumericMutationsTreatExpiredAsAbsent() throws {
        let past = nowMs() - 10
        try store.commit([
            Mutation(key: k("u"), kind: .set(u64(100)), expireAtMs: past),
            Mutation(key: k("n"), kind: .set(v8num(100)), expireAtMs: past),
            Mutation(key: k("s"), kind: .set(bytesValue("not a number")), expireAtMs: past),
            Mutation(key: k("m"), kind: .set(u64(100)), expireAtMs: past)
        ])
        try store.commit([
            Mutation(key: k("u"), kind: .sum(u64(5), min: nil, max: nil, clamp: false)),
            Mutation(key: k("n"), kind: .sum(v8num(5), min: nil, max: nil, clamp: false)),
            Mutation(key: k("s"), kind: .sum(u64(7), min: nil, max: nil, clamp: false)),
            Mutation(key: k("m"), kind: .max(u64(3)))
        ])
        XCTAssertEqual(try store.get("u")?.value, u64(5))
        XCTAssertEqual(try store.get("n")?.value, v8num(5))
        XCTAssertEqual(try store.get("s")?.value, u64(7))
        XCTAssertEqual(try store.get("m")?.value, u64(3))
    }

    func testSumCanSetExpiry() throws {
        let now = nowMs()
        try store.commit([
            Mutation(
                key: k("u"), kind: .sum(u64(1), min: nil, max: nil, clamp: false),
                expireAtMs: now + 5000)
        ])
        XCTAssertEqual(try store.get("u")?.value, u64(1))
        XCTAssertNil(try store.get("u", nowMs: now + 5000))
    }
}
