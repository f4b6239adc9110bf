// Thin wrapper over the SQLite C API: a connection with a per-connection
// prepared-statement cache. A connection is used by one thread at a time.

import CSQLite
import Glibc
import KVEngine

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

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int64 {
        guard let db else { return 0 }
        return Int64(sqlite3_changes64(db))
    }

    /// True when no transaction is open (e.g. after SQLite rolled one back on its own).
    var isAutocommit: Bool {
        guard let db else { return true }
        return sqlite3_get_autocommit(db) != 0
    }
}
