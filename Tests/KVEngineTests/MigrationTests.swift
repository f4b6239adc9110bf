import CSQLite
import Foundation
import XCTest
@testable import KVEngine
@testable import KVSQLite

final class MigrationTests: XCTestCase {
    func testSchemaVersion1DatabaseIsMigrated() throws {
        let tmp = TempDB()
        // Build a version-1 database by hand, with one entry in the v1 layout.
        do {
            let c = try SQLiteConnection(path: tmp.path, flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
            try Schema.migrate(c, to: 1)
            XCTAssertEqual(try c.queryText("SELECT version FROM schema_version"), "1")
            try c.execScript(
                """
                INSERT INTO entries (key, value, encoding, versionstamp)
                VALUES (X'6f6c64', X'010203', 3, X'00000000000000070000');
                UPDATE meta SET value = 7 WHERE key = 'commit_counter';
                UPDATE meta SET value = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee' WHERE key = 'database_id';
                """)
            XCTAssertThrowsError(try c.execScript("SELECT expires_at_ms FROM entries"))
            c.close()
        }

        var store = try tmp.open()
        XCTAssertEqual(store.databaseId, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
        XCTAssertEqual(store.currentVersionstamp, Versionstamps.make(counter: 7))
        let old = try XCTUnwrap(try store.get("old"))
        XCTAssertEqual(old.value, KVValue(data: [1, 2, 3], encoding: .bytes))
        XCTAssertEqual(old.versionstamp, Versionstamps.make(counter: 7))
        // New features work on the migrated file.
        let vs = try store.commit([set("exp", bytesValue("e"), expireAtMs: 1)])
        XCTAssertEqual(vs, Versionstamps.make(counter: 8))
        XCTAssertNil(try store.get("exp"))
        _ = try store.atomicWriteSync(
            AtomicWrite(enqueues: [Enqueue(payload: [1], deadlineMs: 0, keysIfUndelivered: [], backoffSchedule: [])]))
        XCTAssertEqual(try store.queuedMessageCount(), 1)
        store.close()

        // Reopen: already at the latest version.
        store = try tmp.open()
        XCTAssertEqual(try store.get("old")?.value, KVValue(data: [1, 2, 3], encoding: .bytes))
        XCTAssertEqual(store.currentVersionstamp, Versionstamps.make(counter: 9))
        store.close()

        let c = try SQLiteConnection(path: tmp.path, flags: SQLITE_OPEN_READONLY)
        XCTAssertEqual(try c.queryText("SELECT version FROM schema_version"), "\(Schema.latestVersion)")
        XCTAssertEqual(try c.queryText("PRAGMA journal_mode"), "wal")
        c.close()
    }

    func testNewerSchemaIsRejected() throws {
        let tmp = TempDB()
        let s = try tmp.open()
        s.close()
        let c = try SQLiteConnection(path: tmp.path, flags: SQLITE_OPEN_READWRITE)
        try c.execScript("UPDATE schema_version SET version = 999")
        c.close()
        XCTAssertThrowsError(try tmp.open()) { e in
            guard case .internalError(let msg)? = e as? KVError else { return XCTFail("\(e)") }
            XCTAssertTrue(msg.contains("999"))
        }
    }

    func testMigrationsListIsContiguous() {
        XCTAssertEqual(Schema.latestVersion, Schema.migrations.count)
        XCTAssertGreaterThanOrEqual(Schema.latestVersion, 3)
    }

    func testOpenFailsCleanlyOnBadPath() {
        XCTAssertThrowsError(try SQLiteStore(path: "/nonexistent-dir/sub/kv.sqlite3")) { e in
            XCTAssertNotNil(e as? KVError)
        }
    }
}
