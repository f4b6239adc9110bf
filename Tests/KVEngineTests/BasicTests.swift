import CSQLite
import Foundation
import Threading
import XCTest
@testable import KVEngine
@testable import KVSQLite

final class BasicTests: KVTestCase {
    func testSetGetDelete() throws {
        XCTAssertNil(try store.get("a"))
        let vs = try store.commit([set("a", bytesValue("one"))])
        let e = try XCTUnwrap(try store.get("a"))
        XCTAssertEqual(e.key, k("a"))
        XCTAssertEqual(e.value, bytesValue("one"))
        XCTAssertEqual(e.versionstamp, vs)

        try store.commit([set("a", KVValue(data: [1, 2, 3], encoding: .v8))])
        XCTAssertEqual(try store.get("a")?.value, KVValue(data: [1, 2, 3], encoding: .v8))

        try store.commit([Mutation(key: k("a"), kind: .delete)])
        XCTAssertNil(try store.get("a"))
        // Deleting a missing key is fine.
        try store.commit([Mutation(key: k("nope"), kind: .delete)])
    }

    func testEmptyKeyAndEmptyValue() throws {
        try store.commit([Mutation(key: [], kind: .set(KVValue(data: [], encoding: .bytes)))])
        let r = try store.snapshotRead([ReadRange(start: [], end: [0x00], limit: 10)])
        XCTAssertEqual(r[0].count, 1)
        XCTAssertEqual(r[0][0].key, [])
        XCTAssertEqual(r[0][0].value.data, [])
    }

    func testLaterMutationOfSameKeyWins() throws {
        try store.commit([set("a", bytesValue("1")), set("a", bytesValue("2"))])
        XCTAssertEqual(try store.get("a")?.value, bytesValue("2"))
        try store.commit([set("b", bytesValue("1")), Mutation(key: k("b"), kind: .delete)])
        XCTAssertNil(try store.get("b"))
    }

    func testRangeReads() throws {
        try store.commit((0..<10).map { set("k\($0)", bytesValue("v\($0)")) } + [set("z", bytesValue("z"))])
        let all = try store.snapshotRead([ReadRange(start: k("k"), end: k("l"), limit: 100)])[0]
        XCTAssertEqual(all.map(\.key), (0..<10).map { k("k\($0)") })

        let r = try store.snapshotRead([
            ReadRange(start: k("k"), end: k("l"), limit: 3),
            ReadRange(start: k("k"), end: k("l"), limit: 3, reverse: true),
            ReadRange(start: k("k3"), end: k("k5"), limit: 10),
            ReadRange(start: k("a"), end: k("b"), limit: 10),
            ReadRange(start: [], end: [0xFF], limit: 1000),
            ReadRange(start: k("k5"), end: k("k3"), limit: 10)
        ])
        XCTAssertEqual(r.count, 6)
        XCTAssertEqual(r[0].map(\.key), [k("k0"), k("k1"), k("k2")])
        XCTAssertEqual(r[1].map(\.key), [k("k9"), k("k8"), k("k7")])
        XCTAssertEqual(r[2].map(\.key), [k("k3"), k("k4")])
        XCTAssertEqual(r[3], [])
        XCTAssertEqual(r[4].count, 11)
        XCTAssertEqual(r[5], [])
    }

    func testByteWiseOrdering() throws {
        let keys: [Bytes] = [[0x01], [0x01, 0x00], [0x02], [0x7F], [0x80], [0xFF], [0xFF, 0xFF]]
        try store.commit(keys.reversed().map { Mutation(key: $0, kind: .set(bytesValue("x"))) })
        let r = try store.snapshotRead([ReadRange(start: [0x00], end: [0xFF, 0xFF, 0xFF], limit: 100)])[0]
        XCTAssertEqual(r.map(\.key), keys)
    }

    func testVersionstampsIncreaseAndAreShared() throws {
        let v1 = try store.commit([set("a", bytesValue("1")), set("b", bytesValue("2"))])
        XCTAssertEqual(v1.count, 10)
        XCTAssertEqual(Array(v1[8...]), [0, 0])
        XCTAssertEqual(try store.get("a")?.versionstamp, v1)
        XCTAssertEqual(try store.get("b")?.versionstamp, v1)
        XCTAssertEqual(store.currentVersionstamp, v1)
        var last = v1
        for i in 0..<20 {
            let v = try store.commit([set("c", bytesValue("\(i)"))])
            XCTAssertTrue(v.lexicographicallyPrecedes(v) == false && last.lexicographicallyPrecedes(v))
            XCTAssertEqual(Versionstamps.counter(of: v), Versionstamps.counter(of: last)! + 1)
            last = v
        }
        XCTAssertEqual(store.currentVersionstamp, last)

        try reopen()
        XCTAssertEqual(store.currentVersionstamp, last)
        let after = try store.commit([set("d", bytesValue("x"))])
        XCTAssertTrue(last.lexicographicallyPrecedes(after))
        XCTAssertEqual(try store.get("a")?.versionstamp, v1)
    }

    func testDatabaseIdStableAcrossReopen() throws {
        let id = store.databaseId
        XCTAssertEqual(id.count, 36)
        XCTAssertEqual(id, id.lowercased())
        XCTAssertNotNil(UUID(uuidString: id))
        try reopen()
        XCTAssertEqual(store.databaseId, id)
        let other = TempDB()
        let s2 = try other.openStore()
        XCTAssertNotEqual(s2.databaseId, id)
        s2.close()
    }

    func testSetSuffixVersionstampedKey() throws {
        let vs = try store.commit([
            Mutation(key: k("log"), kind: .setSuffixVersionstampedKey(bytesValue("entry"))),
            set("other", bytesValue("o"))
        ])
        let hex = Versionstamps.hex(vs)
        XCTAssertEqual(hex.count, 20)
        XCTAssertEqual(hex, hex.lowercased())
        let expected = k("log") + [0x02] + Array(hex.utf8) + [0x00]
        let r = try store.snapshotRead([ReadRange(start: k("log"), end: k("lof"), limit: 10)])
        XCTAssertEqual(r[0], [])
        let r2 = try store.snapshotRead([ReadRange(start: k("log"), end: k("loh"), limit: 10)])[0]
        XCTAssertEqual(r2.count, 1)
        XCTAssertEqual(r2[0].key, expected)
        XCTAssertEqual(r2[0].versionstamp, vs)
        XCTAssertEqual(r2[0].value, bytesValue("entry"))
        XCTAssertEqual(Versionstamps.hex([0, 0, 0, 0, 0, 0, 0x01, 0xab, 0, 0]), "00000000000001ab0000")
    }

    func testEnqueuesPersisted() throws {
        XCTAssertEqual(try store.queuedMessageCount(), 0)
        let enq = Enqueue(
            payload: [1, 2, 3], deadlineMs: nowMs() + 1000,
            keysIfUndelivered: [k("a"), [], k("bb")], backoffSchedule: [100, 1000])
        let r = try store.atomicWriteSync(AtomicWrite(mutations: [set("x", bytesValue("1"))], enqueues: [enq, enq]))
        guard case .committed = r else { return XCTFail("\(r)") }
        XCTAssertEqual(try store.queuedMessageCount(), 2)
        // Enqueue-only write.
        _ = try store.atomicWriteSync(AtomicWrite(enqueues: [enq]))
        XCTAssertEqual(try store.queuedMessageCount(), 3)
        // A failed check persists nothing.
        let f = try store.atomicWriteSync(AtomicWrite(checks: [Check(key: k("x"), versionstamp: nil)], enqueues: [enq]))
        XCTAssertEqual(f, .checkFailed(failedChecks: [0]))
        XCTAssertEqual(try store.queuedMessageCount(), 3)
        try reopen()
        XCTAssertEqual(try store.queuedMessageCount(), 3)
    }

    func testQueueCodecs() {
        let keys: [Bytes] = [k("a"), [], [0, 1, 2, 255]]
        XCTAssertEqual(QueueKeysCodec.decode(QueueKeysCodec.encode(keys)), keys)
        XCTAssertEqual(QueueKeysCodec.decode([]), [])
        XCTAssertNil(QueueKeysCodec.decode([0, 0, 0, 5, 1]))
        XCTAssertEqual(QueueKeysCodec.encodeBackoff([100, 1000]), "[100,1000]")
        XCTAssertEqual(QueueKeysCodec.decodeBackoff("[100, 1000]"), [100, 1000])
        XCTAssertEqual(QueueKeysCodec.decodeBackoff("[]"), [])
    }

    func testCheckWritable() throws {
        XCTAssertTrue(store.checkWritable())
        store.close()
        XCTAssertFalse(store.checkWritable())
    }

    func testClosedStoreRejects() throws {
        store.close()
        XCTAssertEqual(store.writeError([set("a", bytesValue("1"))]), .unavailable("shutting down"))
        XCTAssertThrowsError(try store.snapshotRead([ReadRange(start: [], end: [0xFF], limit: 1)])) { e in
            XCTAssertEqual(e as? KVError, .unavailable("shutting down"))
        }
        store.close()  // idempotent
    }

    func testSynchronousNormalOption() throws {
        try requireSQLite()
        try reopen(SQLiteStoreOptions(synchronousFull: false, readConnections: 1, maxBatchSize: 1))
        try store.commit([set("a", bytesValue("1"))])
        XCTAssertEqual(try store.get("a")?.value, bytesValue("1"))
    }

    func testDiskFullIsUnavailable() throws {
        try requireSQLite("PostgreSQL's disk-full (SQLSTATE 53100) maps to unavailable in PGError.asKVError")
        // Simulate a full disk by capping the page count of the write connection.
        let box = ResultBox<Bool>()
        sqlite.core.onWriter { conn in
            let ok = (try? conn.execScript("PRAGMA max_page_count = 12;")) != nil
            box.set(ok)
        }
        XCTAssertTrue(box.wait())
        let big = KVValue(data: Bytes(repeating: 7, count: 200_000), encoding: .bytes)
        XCTAssertEqual(
            store.writeError([set("a", bytesValue("small")), set("big", big)]),
            .unavailable("database or disk is full"))
        XCTAssertNil(try store.get("a"))
        // Once space is available again, writes go through.
        let box2 = ResultBox<Bool>()
        sqlite.core.onWriter { conn in box2.set((try? conn.execScript("PRAGMA max_page_count = 1000000;")) != nil) }
        XCTAssertTrue(box2.wait())
        try store.commit([set("b", bytesValue("ok"))])
        XCTAssertEqual(try store.get("b")?.value, bytesValue("ok"))
    }

    func testNoSpaceLeftFromAnyCallIsUnavailable() {
        // ENOSPC comes back as SQLITE_FULL from a plain write, but as an I/O
        // error from growing the -shm or from fsync: all are a retryable 503.
        // Extended codes (SQLITE_IOERR | n << 8) are not imported into Swift.
        let ioerrWrite = SQLITE_IOERR | (3 << 8), ioerrFsync = SQLITE_IOERR | (4 << 8)
        let ioerrShmSize = SQLITE_IOERR | (19 << 8)
        let cases: [(Int32, Int32, String)] = [
            (SQLITE_FULL, 0, "database or disk is full"),
            (ioerrShmSize, ENOSPC, "database or disk is full (no space left on device)"),
            (ioerrFsync, ENOSPC, "database or disk is full (no space left on device)"),
            (ioerrWrite, EDQUOT, "database or disk is full (disk quota exceeded)"),
            (ioerrWrite, EIO, "disk I/O error")
        ]
        for (code, errno, text) in cases {
            XCTAssertEqual(SQLiteError(code: code, message: "x", systemErrno: errno).kvError, .unavailable(text))
        }
    }

    func testWalAndShmAreKeptAtCloseSoARestartNeedsNoNewSpace() throws {
        try requireSQLite()
        // Re-creating a deleted -shm needs free blocks: on a full disk the
        // daemon could not start again after a clean stop.
        try store.commit([set("a", bytesValue("1"))])
        _ = try store.get("a")  // a read connection too: whichever closes last keeps the files
        store.close()
        XCTAssertTrue(FileManager.default.fileExists(atPath: tmp.path + "-shm"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: tmp.path + "-wal"))
        // A plain connection closing last deletes them again; reopening works either way.
        let c = try SQLiteConnection(path: tmp.path, flags: SQLITE_OPEN_READWRITE)
        XCTAssertEqual(try c.queryText("PRAGMA integrity_check"), "ok")
        c.close()
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path + "-wal"))
        store = try tmp.open()
        XCTAssertEqual(try store.get("a")?.value, bytesValue("1"))
        try store.commit([set("b", bytesValue("2"))])
        XCTAssertEqual(try store.get("b")?.value, bytesValue("2"))
    }
}
