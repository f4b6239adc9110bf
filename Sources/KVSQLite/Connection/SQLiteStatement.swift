// A prepared statement of a connection's cache (see SQLiteConnection).

import CSQLite
import Glibc
import KVEngine

final class SQLiteStatement {
    let handle: OpaquePointer
    private let db: OpaquePointer

    init(db: OpaquePointer, sql: String) throws {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else {
            throw SQLiteError(db: db, suffix: " in: \(sql)")
        }
        self.db = db
        self.handle = stmt
    }

    deinit { sqlite3_finalize(handle) }

    func bind(_ index: Int32, _ bytes: Bytes) {
        if bytes.isEmpty {
            // bind_blob with a zero length and a nil pointer would bind NULL.
            sqlite3_bind_zeroblob(handle, index, 0)
        } else {
            bytes.withUnsafeBytes { buf in
                _ = sqlite3_bind_blob(handle, index, buf.baseAddress, Int32(buf.count), kv_sqlite_transient())
            }
        }
    }

    func bind(_ index: Int32, _ value: Int64) {
        sqlite3_bind_int64(handle, index, value)
    }

    func bind(_ index: Int32, _ value: Int64?) {
        if let value { sqlite3_bind_int64(handle, index, value) } else { sqlite3_bind_null(handle, index) }
    }

    func bind(_ index: Int32, _ value: String) {
        sqlite3_bind_text(handle, index, value, -1, kv_sqlite_transient())
    }

    /// true: a row is available; false: done.
    @discardableResult
    func step() throws -> Bool {
        let rc = sqlite3_step(handle)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            throw SQLiteError(db: db)
        }
    }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    func columnIsNull(_ i: Int32) -> Bool { sqlite3_column_type(handle, i) == SQLITE_NULL }

    func columnInt64(_ i: Int32) -> Int64 { sqlite3_column_int64(handle, i) }

    func columnBytes(_ i: Int32) -> Bytes {
        guard let p = sqlite3_column_blob(handle, i) else { return [] }
        let n = Int(sqlite3_column_bytes(handle, i))
        return Bytes(UnsafeRawBufferPointer(start: p, count: n))
    }

    func columnText(_ i: Int32) -> String? {
        guard let p = sqlite3_column_text(handle, i) else { return nil }
        return String(cString: p)
    }
}
