// Offline/online data operations on a database file, without a running
// store: backup (consistent online copy with VACUUM INTO), restore (atomic
// replace that keeps versionstamps increasing), export/import (JSON Lines,
// see ExportFormat.swift).

import KVEngine
import CSQLite
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

public struct DataOpsError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// What a database file holds, as read by the data operations.
public struct DatabaseFileInfo: Sendable, Equatable {
    public var databaseId: String
    public var commitCounter: UInt64
    /// Commit counter of the largest versionstamp stored (0 when empty).
    public var maxVersionstampCounter: UInt64
    public var entries: Int
    public var schemaVersion: Int
}

public enum DataOps {
    // MARK: checks

    /// True when another process has the database open in WAL mode (the
    /// daemon does): SQLite holds a shared lock on the "DMS" byte of the
    /// -shm file for as long as a connection is open. F_GETLK only tests.
    public static func isInUse(db path: String) -> Bool {
        let fd = open(path + "-shm", O_RDONLY | O_CLOEXEC)
        if fd < 0 { return false }
        defer { close(fd) }
        var fl = flock()
        fl.l_type = Int16(F_WRLCK)
        fl.l_whence = Int16(SEEK_SET)
        fl.l_start = 128  // UNIX_SHM_DMS = (22 + 8) * 4 + 8
        fl.l_len = 1
        guard fcntl(fd, F_GETLK, &fl) == 0 else { return false }
        return fl.l_type != Int16(F_UNLCK)
    }

    static func requireFile(_ path: String, what: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw DataOpsError("\(what) \(path) does not exist")
        }
        guard !isDir.boolValue else { throw DataOpsError("\(what) \(path) is a directory") }
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw DataOpsError("\(what) \(path) is not readable")
        }
    }

    static func openExisting(_ path: String, readOnly: Bool = false) throws -> SQLiteConnection {
        let c = try wrap(path) {
            try SQLiteConnection(
                path: path, flags: (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX)
        }
        try c.execScript("PRAGMA busy_timeout = 10000;")
        return c
    }

    static func wrap<T>(_ path: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as SQLiteError {
            throw DataOpsError("\(path): \(e.message)")
        } catch let e as KVError {
            throw DataOpsError("\(path): \(e)")
        }
    }

    /// Reads the meta rows without writing anything.
    static func readInfo(_ c: SQLiteConnection, path: String) throws -> DatabaseFileInfo {
        try wrap(path) {
            let t = try c.statement(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('meta', 'entries', 'schema_version')"
            )
            defer { t.reset() }
            guard try t.step(), t.columnInt64(0) == 3 else {
                throw DataOpsError("\(path) is not a kvconnectd database")
            }
            let v = try c.statement("SELECT version FROM schema_version WHERE id = 0")
            defer { v.reset() }
            let version = try v.step() ? Int(v.columnInt64(0)) : 0
            if version > Schema.latestVersion {
                throw DataOpsError(
                    "\(path) has schema version \(version), newer than this kvconnectd supports (\(Schema.latestVersion))"
                )
            }
            let m = try c.statement("SELECT value FROM meta WHERE key = ?")
            defer { m.reset() }
            m.bind(1, Schema.databaseIdKey)
            guard try m.step(), let id = m.columnText(0) else { throw DataOpsError("\(path): database id missing") }
            m.reset()
            m.bind(1, Schema.commitCounterKey)
            guard try m.step() else { throw DataOpsError("\(path): commit counter missing") }
            let counter = UInt64(bitPattern: m.columnInt64(0))
            let e = try c.statement("SELECT count(*), max(versionstamp) FROM entries")
            defer { e.reset() }
            guard try e.step() else { throw DataOpsError("\(path): cannot count entries") }
            let maxVs = e.columnIsNull(1) ? 0 : (Versionstamps.counter(of: e.columnBytes(1)) ?? 0)
            return DatabaseFileInfo(
                databaseId: id, commitCounter: counter, maxVersionstampCounter: maxVs,
                entries: Int(e.columnInt64(0)), schemaVersion: version)
        }
    }

    static func integrityCheck(_ c: SQLiteConnection, path: String) throws {
        let r = try wrap(path) { try c.queryText("PRAGMA integrity_check") }
        guard r == "ok" else { throw DataOpsError("\(path) failed the integrity check: \(r ?? "no result")") }
    }

    static func fsync(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DataOpsError("cannot open \(path) to sync: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard Glibc.fsync(fd) == 0 else {
            throw DataOpsError("fsync \(path) failed: \(String(cString: strerror(errno)))")
        }
    }

    static func directory(of path: String) -> String {
        let d = (path as NSString).deletingLastPathComponent
        return d.isEmpty ? "." : d
    }

    static func removeIfPresent(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT {
            throw DataOpsError("cannot remove \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Makes `path` a single self-contained file (rollback journal) and checks it.
    static func finishCopy(_ path: String) throws -> DatabaseFileInfo {
        let c = try openExisting(path)
        defer { c.close() }
        try integrityCheck(c, path: path)
        _ = try wrap(path) { try c.queryText("PRAGMA journal_mode = DELETE") }
        return try readInfo(c, path: path)
    }

    // MARK: backup

    /// Copies the database at `db` (which a daemon may be serving) to `out`
    /// as one consistent snapshot: VACUUM INTO a temporary file beside
    /// `out`, integrity check, fsync, rename. Writers are not blocked.
    public static func backup(db: String, to out: String, overwrite: Bool = false) throws -> DatabaseFileInfo {
        try requireFile(db, what: "database")
        if !overwrite && FileManager.default.fileExists(atPath: out) {
            throw DataOpsError("\(out) already exists (use --overwrite)")
        }
        let tmp = out + ".tmp-\(getpid())"
        try removeIfPresent(tmp)
        do {
            let c = try openExisting(db)
            defer { c.close() }
            _ = try readInfo(c, path: db)
            try wrap(db) {
                let s = try SQLiteStatement(db: c.db!, sql: "VACUUM INTO ?1")
                s.bind(1, tmp)
                try s.step()
            }
        }
        do {
            let info = try finishCopy(tmp)
            try fsync(path: tmp)
            guard rename(tmp, out) == 0 else {
                throw DataOpsError("cannot rename \(tmp) to \(out): \(String(cString: strerror(errno)))")
            }
            try fsync(path: directory(of: out))
            return info
        } catch {
            try? removeIfPresent(tmp)
            throw error
        }
    }

    // MARK: restore

    public struct RestoreResult: Sendable {
        public var backup: DatabaseFileInfo
        /// The database that was replaced, when there was a readable one.
        public var replaced: DatabaseFileInfo?
        /// The commit counter written into the restored file.
        public var commitCounter: UInt64
        public var databaseId: String
    }

    /// Replaces `db` with the backup `from`, atomically. Refuses while a
    /// process has `db` open. The restored commit counter is the largest of
    /// the backup's, the replaced database's (and its largest versionstamp)
    /// and `minVersionstamp`'s, so new versionstamps are greater than any the
    /// database issued before. The backup's database id is kept unless
    /// `newDatabaseId`; restoring a backup of another database over an
    /// existing one needs `force`.
    public static func restore(
        db: String, from: String, minVersionstamp: Bytes? = nil,
        force: Bool = false, newDatabaseId: Bool = false
    ) throws -> RestoreResult {
        try requireFile(from, what: "backup")
        if isInUse(db: db) {
            throw DataOpsError("database \(db) is in use by a running process (stop the daemon first)")
        }
        if let m = minVersionstamp, m.count != 10 {
            throw DataOpsError("--min-versionstamp must be 20 hex digits")
        }
        var replaced: DatabaseFileInfo?
        if FileManager.default.fileExists(atPath: db) {
            do {
                let c = try openExisting(db)
                replaced = try readInfo(c, path: db)
                c.close()  // last connection: checkpoints and removes the WAL
            } catch {
                if !force {
                    throw DataOpsError("cannot read the current database (\(error)); use --force to replace it anyway")
                }
            }
        }

        let tmp = db + ".restore-tmp-\(getpid())"
        try removeIfPresent(tmp)
        do {
            do {
                try FileManager.default.copyItem(atPath: from, toPath: tmp)
            } catch {
                throw DataOpsError("cannot copy \(from) to \(tmp): \(error.localizedDescription)")
            }
            let backup = try finishCopy(tmp)
            if let r = replaced, r.databaseId != backup.databaseId, !force, !newDatabaseId {
                throw DataOpsError(
                    "the backup is of database \(backup.databaseId) but \(db) is database \(r.databaseId) (use --force)"
                )
            }
            var counter = max(backup.commitCounter, backup.maxVersionstampCounter)
            if let r = replaced { counter = max(counter, r.commitCounter, r.maxVersionstampCounter) }
            if let m = minVersionstamp, let mc = Versionstamps.counter(of: m) { counter = max(counter, mc) }
            var id = backup.databaseId
            do {
                let c = try openExisting(tmp)
                defer { c.close() }
                try wrap(tmp) {
                    try c.run("BEGIN IMMEDIATE")
                    let s = try c.statement("UPDATE meta SET value = ?1 WHERE key = ?2")
                    s.bind(1, Int64(bitPattern: counter))
                    s.bind(2, Schema.commitCounterKey)
                    try s.step()
                    s.reset()
                    if newDatabaseId {
                        id = UUID().uuidString.lowercased()
                        s.bind(1, id)
                        s.bind(2, Schema.databaseIdKey)
                        try s.step()
                        s.reset()
                    }
                    try c.run("COMMIT")
                }
            }
            try fsync(path: tmp)
            // Stale WAL/shm of the old file must never be applied to the new one.
            try removeIfPresent(db + "-wal")
            try removeIfPresent(db + "-shm")
            try removeIfPresent(db + "-journal")
            guard rename(tmp, db) == 0 else {
                throw DataOpsError("cannot rename \(tmp) to \(db): \(String(cString: strerror(errno)))")
            }
            try fsync(path: directory(of: db))
            return RestoreResult(backup: backup, replaced: replaced, commitCounter: counter, databaseId: id)
        } catch {
            try? removeIfPresent(tmp)
            try? removeIfPresent(tmp + "-journal")
            throw error
        }
    }

    // MARK: export / import

    /// Writes every row of `entries` (expired ones included, with their
    /// expiresAt) as JSON lines, in key order, from one read transaction.
    /// Returns the number of entries.
    @discardableResult
    public static func export(db: String, write: (String) throws -> Void) throws -> Int {
        try requireFile(db, what: "database")
        let c = try openExisting(db)
        defer { c.close() }
        _ = try readInfo(c, path: db)
        return try wrap(db) {
            try c.execScript("PRAGMA query_only = 1;")
            try c.run("BEGIN")
            defer { if !c.isAutocommit { try? c.run("ROLLBACK") } }
            let s = try c.statement(
                "SELECT key, value, encoding, versionstamp, expires_at_ms FROM entries ORDER BY key")
            defer { s.reset() }
            var n = 0
            while try s.step() {
                let e = ExportedEntry(
                    key: s.columnBytes(0), value: s.columnBytes(1), encoding: s.columnInt64(2),
                    versionstamp: s.columnBytes(3),
                    expiresAtMs: s.columnIsNull(4) ? nil : s.columnInt64(4))
                try write(ExportFormat.line(for: e) + "\n")
                n += 1
            }
            return n
        }
    }

    public struct ImportResult: Sendable {
        public var entries: Int
        public var databaseId: String
        public var commitCounter: UInt64
    }

    /// Upserts the entries of a JSON Lines export into `db` (created if
    /// missing) in one transaction, with their versionstamps and expiry, and
    /// raises the commit counter to the largest imported versionstamp. Any bad
    /// line aborts the whole import. Refuses while a process has `db` open.
    public static func importEntries(db: String, jsonLines: Data) throws -> ImportResult {
        if isInUse(db: db) {
            throw DataOpsError("database \(db) is in use by a running process (stop the daemon first)")
        }
        // Parse everything first: a bad file changes nothing.
        var entries: [ExportedEntry] = []
        var lineNo = 0
        for raw in jsonLines.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNo += 1
            var bytes = Bytes(raw)
            if bytes.last == 0x0D { bytes.removeLast() }
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw DataOpsError("line \(lineNo): invalid UTF-8")
            }
            do {
                entries.append(try ExportFormat.parse(line: text))
            } catch {
                throw DataOpsError("line \(lineNo): \(error)")
            }
        }

        let c = try wrap(db) {
            try SQLiteConnection(path: db, flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX)
        }
        defer { c.close() }
        return try wrap(db) {
            try c.execScript("PRAGMA busy_timeout = 10000;")
            _ = try c.queryText("PRAGMA journal_mode = WAL")
            try c.execScript("PRAGMA synchronous = FULL;")
            let (id, existing) = try Schema.migrate(c)
            try c.run("BEGIN IMMEDIATE")
            do {
                var counter = existing
                let s = try c.statement(SQL.upsert)
                for e in entries {
                    s.bind(1, e.key)
                    s.bind(2, e.value)
                    s.bind(3, e.encoding)
                    s.bind(4, e.versionstamp)
                    s.bind(5, e.expiresAtMs)
                    try s.step()
                    s.reset()
                    if let vc = Versionstamps.counter(of: e.versionstamp) { counter = max(counter, vc) }
                }
                if counter != existing {
                    let u = try c.statement(SQL.updateCounter)
                    defer { u.reset() }
                    u.bind(1, Int64(bitPattern: counter))
                    try u.step()
                }
                try c.run("COMMIT")
                return ImportResult(entries: entries.count, databaseId: id, commitCounter: counter)
            } catch {
                if !c.isAutocommit { try? c.run("ROLLBACK") }
                throw error
            }
        }
    }
}
