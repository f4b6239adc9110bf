import Foundation
import Threading
import XCTest
@testable import KVEngine
@testable import KVSQLite

final class ReadPoolTests: KVTestCase {
    func testReadsDoNotWaitForTheWriter() throws {
        try requireSQLite("holds the SQLite write lock on the writer connection")
        try store.commit([set("a", bytesValue("committed"))])
        let inTx = ResultBox<Bool>(), release = ResultBox<Bool>(), finished = ResultBox<Bool>()
        sqlite.core.onWriter { conn in
            do {
                try conn.run("BEGIN IMMEDIATE")
                try conn.execScript(
                    "INSERT INTO entries (key, value, encoding, versionstamp) VALUES (X'62', X'00', 3, X'00000000000000ff0000'); UPDATE entries SET value = X'01' WHERE key = X'61';"
                )
                inTx.set(true)
                _ = release.wait()
                try conn.run("ROLLBACK")
            } catch {
                inTx.set(false)
            }
            finished.set(true)
        }
        XCTAssertTrue(inTx.wait())
        // The write transaction is open and holds the write lock; reads proceed on the last commit.
        let start = Date()
        XCTAssertEqual(try store.get("a")?.value, bytesValue("committed"))
        XCTAssertNil(try store.get("b"))
        XCTAssertLessThan(Date().timeIntervalSince(start), 1.0)
        release.set(true)
        XCTAssertTrue(finished.wait())
        XCTAssertNil(try store.get("b"))
    }

    func testConcurrentReadersWithSmallPool() throws {
        try reopen(SQLiteStoreOptions(readConnections: 1))
        try store.commit((0..<20).map { set("r\($0)", bytesValue("\($0)")) })
        let s = store!
        let ok = Counter()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<50 {
                if let r = try? s.snapshotRead([ReadRange(start: k("r"), end: k("s"), limit: 100)]), r[0].count == 20 {
                    ok.add()
                }
            }
        }
        XCTAssertEqual(ok.value, 200)
    }
}
