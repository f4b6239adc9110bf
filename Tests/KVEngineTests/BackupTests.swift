import Foundation
import Synchronization
import XCTest
@testable import KVEngine
@testable import KVSQLite

final class BackupTests: XCTestCase {
    var tmp: TempDB!

    override func setUp() { tmp = TempDB() }
    override func tearDown() { tmp = nil }

    func path(_ name: String) -> String { tmp.dir.appendingPathComponent(name).path }

    func set(
        _ store: SQLiteStore, _ key: String, _ value: Bytes, encoding: ValueEncoding = .bytes,
        expireAtMs: Int64? = nil
    ) throws -> Versionstamp {
        let r = try store.atomicWriteSync(
            AtomicWrite(mutations: [
                Mutation(
                    key: KeyCodec.encode([.string(key)]), kind: .set(KVValue(data: value, encoding: encoding)),
                    expireAtMs: expireAtMs)
            ]))
        guard case .committed(let vs) = r else { throw DataOpsError("not committed") }
        return vs
    }

    func rows(_ db: String) throws -> [ExportedEntry] {
        var out: [ExportedEntry] = []
        let c = try DataOps.openExisting(db)
        defer { c.close() }
        let s = try c.statement("SELECT key, value, encoding, versionstamp, expires_at_ms FROM entries ORDER BY key")
        defer { s.reset() }
        while try s.step() {
            out.append(
                ExportedEntry(
                    key: s.columnBytes(0), value: s.columnBytes(1), encoding: s.columnInt64(2),
                    versionstamp: s.columnBytes(3), expiresAtMs: s.columnIsNull(4) ? nil : s.columnInt64(4)))
        }
        return out
    }

    func testBackupWhileWritingIsConsistent() throws {
        let store = try tmp.open()
        for i in 0..<50 { _ = try set(store, "k\(i)", [UInt8(i)]) }
        let stop = ManagedAtomicFlag()
        let writer = Thread {
            var i = 0
            while !stop.isSet {
                _ = try? store.atomicWriteSync(
                    AtomicWrite(mutations: [
                        Mutation(
                            key: KeyCodec.encode([.string("w"), .number(Double(i))]),
                            kind: .set(KVValue(data: [1], encoding: .bytes)))
                    ]))
                i += 1
            }
        }
        writer.start()
        Thread.sleep(forTimeInterval: 0.1)
        let out = path("backup.sqlite3")
        let info = try DataOps.backup(db: tmp.path, to: out)
        let before = store.currentVersionstamp
        Thread.sleep(forTimeInterval: 0.1)
        stop.set()
        while !writer.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        XCTAssertGreaterThan(
            Versionstamps.counter(of: store.currentVersionstamp)!, Versionstamps.counter(of: before)!,
            "writes went on during and after the backup")
        XCTAssertEqual(info.databaseId, store.databaseId)
        XCTAssertGreaterThanOrEqual(info.entries, 50)
        // The copy is a snapshot: every commit up to its counter, nothing after.
        XCTAssertEqual(info.entries, Int(info.commitCounter))
        XCTAssertEqual(info.maxVersionstampCounter, info.commitCounter)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "-wal"))
        store.close()

        // Refuses to overwrite without the flag; missing source is a clear error.
        XCTAssertThrowsError(try DataOps.backup(db: tmp.path, to: out)) {
            XCTAssertTrue("\($0)".contains("already exists"), "\($0)")
        }
        XCTAssertNoThrow(try DataOps.backup(db: tmp.path, to: out, overwrite: true))
        XCTAssertThrowsError(try DataOps.backup(db: path("missing.sqlite3"), to: path("x"))) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
        try Data("not a database at all, no no no no no no no no no no no no no no no".utf8).write(
            to: URL(fileURLWithPath: path("junk")))
        XCTAssertThrowsError(try DataOps.backup(db: path("junk"), to: path("y")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("y")))
    }

    func testRestoreKeepsVersionstampsIncreasing() throws {
        var store = try tmp.open()
        let id = store.databaseId
        for i in 0..<5 { _ = try set(store, "a\(i)", [1]) }
        let backupFile = path("b.sqlite3")
        let info = try DataOps.backup(db: tmp.path, to: backupFile)
        XCTAssertEqual(info.commitCounter, 5)
        var last = Versionstamp()
        for i in 0..<5 { last = try set(store, "later\(i)", [2]) }
        XCTAssertEqual(Versionstamps.counter(of: last), 10)
        store.close()

        let r = try DataOps.restore(db: tmp.path, from: backupFile)
        XCTAssertEqual(r.commitCounter, 10)
        XCTAssertEqual(r.databaseId, id)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path + "-wal"))
        store = try tmp.open()
        XCTAssertEqual(store.databaseId, id, "the database id is kept")
        XCTAssertEqual(try store.readKeys([KeyCodec.encode([.string("later0")])]), [nil], "data is the backup's")
        XCTAssertNotNil(try store.readKeys([KeyCodec.encode([.string("a4")])])[0])
        let next = try set(store, "after", [3])
        XCTAssertTrue(last.lexicographicallyPrecedes(next))
        XCTAssertEqual(Versionstamps.counter(of: next), 11)
        store.close()

        // With the live file gone, --min-versionstamp sets the floor.
        try FileManager.default.removeItem(atPath: tmp.path)
        let r2 = try DataOps.restore(db: tmp.path, from: backupFile, minVersionstamp: Versionstamps.make(counter: 1000))
        XCTAssertEqual(r2.commitCounter, 1000)
        store = try tmp.open()
        XCTAssertEqual(Versionstamps.counter(of: try set(store, "x", [1])), 1001)
        store.close()

        // Another database's backup needs --force (or a new id).
        let other = TempDB()
        let os = try other.open()
        _ = try set(os, "o", [1])
        os.close()
        let otherBackup = path("other.sqlite3")
        _ = try DataOps.backup(db: other.path, to: otherBackup)
        XCTAssertThrowsError(try DataOps.restore(db: tmp.path, from: otherBackup)) {
            XCTAssertTrue("\($0)".contains("--force"), "\($0)")
        }
        let r3 = try DataOps.restore(db: tmp.path, from: otherBackup, newDatabaseId: true)
        XCTAssertNotEqual(r3.databaseId, id)
        XCTAssertEqual(r3.commitCounter, 1001)

        // Bad inputs.
        XCTAssertThrowsError(try DataOps.restore(db: tmp.path, from: path("nope")))
        XCTAssertThrowsError(try DataOps.restore(db: tmp.path, from: tmp.dir.path))
        XCTAssertThrowsError(try DataOps.restore(db: tmp.path, from: backupFile, minVersionstamp: [1, 2]))
    }

    func testExportImportRoundTripIsByteForByte() throws {
        let store = try tmp.open()
        let v8Values = [
            "ff10220568656c6c6f", "ff104e000000000000f87f", "ff106f2201786f22017349027b012201795e017b02",
            "ff1061034900490249044906400203", "ff106f22016242030102ff56420003007b01", "ff103b22016149023a02"
        ]
        var writes: [Mutation] = []
        for (i, hex) in v8Values.enumerated() {
            writes.append(
                Mutation(
                    key: KeyCodec.encode([.string("v8"), .bigint(BigIntValue(Int64(i)))]),
                    kind: .set(KVValue(data: ExportFormat.unhex(hex)!, encoding: .v8))))
        }
        writes.append(Mutation(key: [0x01, 0x00, 0xFF, 0x00], kind: .set(KVValue(data: [], encoding: .bytes))))
        writes.append(Mutation(key: [0x7F, 0x00], kind: .set(KVValue(data: [1, 2, 3, 4, 5, 6, 7, 8], encoding: .le64))))
        writes.append(
            Mutation(
                key: KeyCodec.encode([.number(.nan), .bool(true)]), kind: .set(KVValue(data: [0], encoding: .bytes)),
                expireAtMs: 4_000_000_000_000))
        _ = try store.atomicWriteSync(AtomicWrite(mutations: writes))
        _ = try store.atomicWriteSync(
            AtomicWrite(mutations: [
                Mutation(
                    key: KeyCodec.encode([.string("vs")]),
                    kind: .setSuffixVersionstampedKey(KVValue(data: [9], encoding: .bytes)))
            ]))
        store.close()

        var text = ""
        let n = try DataOps.export(db: tmp.path) { text += $0 }
        XCTAssertEqual(n, v8Values.count + 4)
        XCTAssertTrue(text.contains(#""value":"hello""#), text)
        XCTAssertTrue(text.contains(#"{"v8":"#), text)

        let copy = path("imported.sqlite3")
        let r = try DataOps.importEntries(db: copy, jsonLines: Data(text.utf8))
        XCTAssertEqual(r.entries, n)
        XCTAssertEqual(r.commitCounter, 2)
        XCTAssertEqual(try rows(copy), try rows(tmp.path))
        // Exporting the copy gives the same text.
        var again = ""
        try DataOps.export(db: copy) { again += $0 }
        XCTAssertEqual(again, text)
        // New writes to the imported database get later versionstamps.
        let s = try SQLiteStore(path: copy)
        XCTAssertEqual(Versionstamps.counter(of: try set(s, "new", [1])), 3)
        s.close()

        // A bad line changes nothing and names the line.
        let before = try rows(copy)
        let bad = text + "{\"key\":[\"zz\"],\"value\":1}\n"
        XCTAssertThrowsError(try DataOps.importEntries(db: copy, jsonLines: Data(bad.utf8))) {
            XCTAssertTrue("\($0)".hasPrefix("line \(n + 1):"), "\($0)")
        }
        XCTAssertEqual(try rows(copy), before)
        XCTAssertThrowsError(try DataOps.export(db: path("missing")) { _ in })
    }
}

/// A flag set once from one thread and read from another.
final class ManagedAtomicFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
