// Thin wrapper over the SQLite C API: a connection with a per-connection
// prepared-statement cache. A connection is used by one thread at a time.

import KVEngine
import CSQLite
import Glibc

struct SQLiteError: Error, CustomStringConvertible {
    /// Extended result code.
    let code: Int32
    let message: String
    /// errno behind an I/O error (`sqlite3_system_errno`), 0 if none.
    var systemErrno: Int32 = 0

    var primaryCode: Int32 { code & 0xFF }

    var description: String {
        "SQLite error \(code): \(message)" + (systemErrno != 0 ? " (errno \(systemErrno))" : "")
    }

    /// The error of the last failed call on `db`.
    init(db: OpaquePointer, suffix: String = "") {
        code = sqlite3_extended_errcode(db)
        message = String(cString: sqlite3_errmsg(db)) + suffix
        systemErrno = sqlite3_system_errno(db)
    }

    init(code: Int32, message: String, systemErrno: Int32 = 0) {
        self.code = code
        self.message = message
        self.systemErrno = systemErrno
    }

    /// Maps to the engine's error: temporary conditions → unavailable.
    var kvError: KVError {
        // ENOSPC surfaces as SQLITE_FULL from a plain write, but as
        // SQLITE_IOERR_* from growing the -shm file or from fsync.
        if primaryCode == SQLITE_IOERR || primaryCode == SQLITE_FULL || primaryCode == SQLITE_CANTOPEN {
            if systemErrno == ENOSPC { return .unavailable("database or disk is full (no space left on device)") }
            if systemErrno == EDQUOT { return .unavailable("database or disk is full (disk quota exceeded)") }
        }
        switch primaryCode {
        case SQLITE_FULL: return .unavailable("database or disk is full")
        case SQLITE_BUSY: return .unavailable("database is busy")
        case SQLITE_LOCKED: return .unavailable("database is locked")
        case SQLITE_IOERR: return .unavailable("disk I/O error")
        case SQLITE_NOMEM: return .unavailable("out of memory")
        case SQLITE_CANTOPEN: return .unavailable("unable to open database file")
        case SQLITE_PROTOCOL: return .unavailable("database locking protocol error")
        default: return .internalError(description)
        }
    }
}

extension Error {
    /// Any error as a KVError.
    var asKVError: KVError {
        if let e = self as? KVError { return e }
        if let e = self as? SQLiteError { return e.kvError }
        return .internalError(String(describing: self))
    }
}

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

final class SQLiteConnection {
    private(set) var db: OpaquePointer?
    private var cache: [String: SQLiteStatement] = [:]

    init(path: String, flags: Int32) throws {
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            let code = handle.map { sqlite3_extended_errcode($0) } ?? rc
            let sysErrno = handle.map { sqlite3_system_errno($0) } ?? 0
            if let handle { sqlite3_close_v2(handle) }
            throw SQLiteError(code: code, message: "\(msg) (\(path))", systemErrno: sysErrno)
        }
        sqlite3_extended_result_codes(handle, 1)
        self.db = handle
    }

    deinit { close() }

    func close() {
        cache.removeAll()
        if let db { sqlite3_close_v2(db) }
        db = nil
    }

    private func requireOpen() throws -> OpaquePointer {
        guard let db else { throw SQLiteError(code: SQLITE_MISUSE, message: "connection closed") }
        return db
    }

    /// A cached prepared statement. Callers must `reset()` it when done.
    func statement(_ sql: String) throws -> SQLiteStatement {
        if let s = cache[sql] { return s }
        let s = try SQLiteStatement(db: try requireOpen(), sql: sql)
        cache[sql] = s
        return s
    }

    /// Runs a cached statement without parameters to completion.
    func run(_ sql: String) throws {
        let s = try statement(sql)
        defer { s.reset() }
        while try s.step() {}
    }

    /// Runs a (possibly multi-statement) script, uncached. For schema work and pragmas.
    func execScript(_ sql: String) throws {
        let db = try requireOpen()
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
            sqlite3_free(err)
            throw SQLiteError(code: sqlite3_extended_errcode(db), message: msg, systemErrno: sqlite3_system_errno(db))
        }
    }

    /// First column of the first row as text (for pragmas), uncached.
    func queryText(_ sql: String) throws -> String? {
        let s = try SQLiteStatement(db: try requireOpen(), sql: sql)
        guard try s.step() else { return nil }
        return s.columnText(0)
    }

    /// Keeps the -wal and -shm files when this connection closes last
    /// (SQLITE_FCNTL_PERSIST_WAL; the WAL is still checkpointed). The next
    /// open truncates the -shm and re-extends it at once, reusing its own
    /// blocks, so a daemon stopped cleanly can start again on a full disk.
    func persistWAL() {
        guard let db else { return }
        var on: Int32 = 1
        _ = sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &on)
    }

    /// True when no transaction is open (e.g. after SQLite rolled one back on its own).
    var isAutocommit: Bool {
        guard let db else { return true }
        return sqlite3_get_autocommit(db) != 0
    }
}
