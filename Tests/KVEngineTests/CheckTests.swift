import Foundation
import XCTest
@testable import KVEngine
@testable import KVSQLite

final class CheckTests: KVTestCase {
    func testNilVersionstampMeansMustNotExist() throws {
        let r1 = try store.atomicWriteSync(
            AtomicWrite(
                checks: [Check(key: k("a"), versionstamp: nil)],
                mutations: [set("a", bytesValue("1"))]))
        guard case .committed = r1 else { return XCTFail("\(r1)") }
        let r2 = try store.atomicWriteSync(
            AtomicWrite(
                checks: [Check(key: k("a"), versionstamp: nil)],
                mutations: [set("a", bytesValue("2"))]))
        XCTAssertEqual(r2, .checkFailed(failedChecks: [0]))
        XCTAssertEqual(try store.get("a")?.value, bytesValue("1"))
    }

    func testMatchingVersionstampCommits() throws {
        let vs = try store.commit([set("a", bytesValue("1"))])
        let vs2 = try store.commit([set("a", bytesValue("2"))], checks: [Check(key: k("a"), versionstamp: vs)])
        XCTAssertTrue(vs.lexicographicallyPrecedes(vs2))
        XCTAssertEqual(try store.get("a")?.versionstamp, vs2)
    }

    func testAllFailingIndexesReportedAndNothingApplied() throws {
        let va = try store.commit([set("a", bytesValue("1"))])
        let vb = try store.commit([set("b", bytesValue("1"))])
        let before = store.currentVersionstamp
        let r = try store.atomicWriteSync(
            AtomicWrite(
                checks: [
                    Check(key: k("a"), versionstamp: va),  // ok
                    Check(key: k("b"), versionstamp: va),  // wrong
                    Check(key: k("c"), versionstamp: nil),  // ok
                    Check(key: k("a"), versionstamp: nil),  // exists
                    Check(key: k("c"), versionstamp: vb)  // absent
                ],
                mutations: [set("a", bytesValue("changed")), set("new", bytesValue("x"))],
                enqueues: [Enqueue(payload: [1], deadlineMs: 0, keysIfUndelivered: [], backoffSchedule: [])]))
        XCTAssertEqual(r, .checkFailed(failedChecks: [1, 3, 4]))
        XCTAssertEqual(try store.get("a")?.value, bytesValue("1"))
        XCTAssertNil(try store.get("new"))
        XCTAssertEqual(try store.queuedMessageCount(), 0)
        // A failed write consumes no versionstamp.
        XCTAssertEqual(store.currentVersionstamp, before)
    }

    func testChecksOnlyWrite() throws {
        let va = try store.commit([set("a", bytesValue("1"))])
        let r = try store.atomicWriteSync(AtomicWrite(checks: [Check(key: k("a"), versionstamp: va)]))
        guard case .committed(let vs) = r else { return XCTFail("\(r)") }
        XCTAssertTrue(va.lexicographicallyPrecedes(vs))
    }
}
