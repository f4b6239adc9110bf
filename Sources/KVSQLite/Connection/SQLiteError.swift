import CSQLite
import Glibc
import KVEngine

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
