// backup / restore / export / import: work on the database file directly,
// no daemon needed. Errors: one line on stderr, exit code 2.

import ArgumentParser
import Foundation
import KVEngine
import KVSQLite

private func fail(_ command: String, _ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("kvconnectd \(command): \(error)\n".utf8))
    return ExitCode(2)
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a consistent copy of a database, also while the daemon serves it.",
        discussion: """
            Uses SQLite's VACUUM INTO (a snapshot; writers are not blocked), checks the copy
            (PRAGMA integrity_check), fsyncs it and renames it into place.
            """)
    @Option(help: "The database file (e.g. ./data/kv.sqlite3).")
    var db: String
    @Option(help: "The backup file to write.")
    var out: String
    @Flag(help: "Replace --out if it exists.")
    var overwrite = false

    func run() throws {
        do {
            let info = try DataOps.backup(db: db, to: out, overwrite: overwrite)
            print(
                "backup: \(out): database \(info.databaseId), \(info.entries) entries, commit counter \(info.commitCounter)"
            )
        } catch {
            throw fail("backup", error)
        }
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replace a database with a backup (the daemon must be stopped).",
        discussion: """
            The file is replaced atomically (copy, fsync, rename; stale -wal/-shm removed).
            The database id of the backup is kept, so clients stay bound to it. The commit
            counter becomes the largest of the backup's, the replaced database's and
            --min-versionstamp's, so new versionstamps are greater than any issued before.
            """)
    @Option(help: "The database file to replace (created if missing).")
    var db: String
    @Option(help: "The backup file.")
    var from: String
    @Option(
        help:
            "New versionstamps will be greater than this one (20 hex digits), e.g. the last one clients saw when the old file is lost."
    )
    var minVersionstamp: String?
    @Flag(help: "Replace even a database that cannot be read or has another database id.")
    var force = false
    @Flag(help: "Give the restored database a new id (clients must reconnect).")
    var newDatabaseId = false

    func run() throws {
        do {
            var minVs: [UInt8]?
            if let m = minVersionstamp {
                guard let b = ExportFormat.unhex(m), b.count == 10 else {
                    throw DataOpsError("--min-versionstamp must be 20 hex digits")
                }
                minVs = b
            }
            let r = try DataOps.restore(
                db: db, from: from, minVersionstamp: minVs, force: force, newDatabaseId: newDatabaseId)
            print(
                "restore: \(db): database \(r.databaseId), \(r.backup.entries) entries, commit counter \(r.commitCounter)"
                    + " (backup \(r.backup.commitCounter)" + (r.replaced.map { ", replaced \($0.commitCounter)" } ?? "")
                    + ")")
        } catch {
            throw fail("restore", error)
        }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write all entries as JSON Lines (readable keys and values, exact bytes kept).")
    @Option(help: "The database file.")
    var db: String
    @Option(help: "Output file (default: standard output).")
    var out: String?

    func run() throws {
        do {
            var handle = FileHandle.standardOutput
            let tmp = out.map { $0 + ".tmp-\(getpid())" }
            if let tmp {
                guard FileManager.default.createFile(atPath: tmp, contents: nil),
                    let h = FileHandle(forWritingAtPath: tmp)
                else {
                    throw DataOpsError("cannot create \(tmp)")
                }
                handle = h
            }
            var buffer = Data()
            let n: Int
            do {
                n = try DataOps.export(db: db) { line in
                    buffer.append(contentsOf: line.utf8)
                    if buffer.count >= 1 << 16 {
                        try handle.write(contentsOf: buffer)
                        buffer.removeAll(keepingCapacity: true)
                    }
                }
                try handle.write(contentsOf: buffer)
            } catch {
                if let tmp { try? FileManager.default.removeItem(atPath: tmp) }
                throw error
            }
            if let tmp, let out {
                try handle.synchronize()
                try handle.close()
                guard rename(tmp, out) == 0 else {
                    let reason = String(cString: strerror(errno))
                    try? FileManager.default.removeItem(atPath: tmp)
                    throw DataOpsError("cannot rename \(tmp) to \(out): \(reason)")
                }
                FileHandle.standardError.write(Data("export: \(n) entries to \(out)\n".utf8))
            }
        } catch {
            throw fail("export", error)
        }
    }
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load a JSON Lines export into a database (the daemon must be stopped).",
        discussion: """
            Entries are upserted with their stored bytes, versionstamps and expiry, in one
            transaction (a bad line changes nothing). The commit counter is raised to the
            largest imported versionstamp. The database is created if missing.
            """)
    @Option(help: "The database file (created if missing).")
    var db: String
    @Option(name: .customLong("in"), help: "The JSON Lines file ('-' for standard input).")
    var input: String

    func run() throws {
        do {
            let data: Data
            if input == "-" {
                data = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                guard FileManager.default.fileExists(atPath: input) else {
                    throw DataOpsError("\(input) does not exist")
                }
                guard let d = FileManager.default.contents(atPath: input) else {
                    throw DataOpsError("cannot read \(input)")
                }
                data = d
            }
            let r = try DataOps.importEntries(db: db, jsonLines: data)
            print("import: \(db): database \(r.databaseId), \(r.entries) entries, commit counter \(r.commitCounter)")
        } catch {
            throw fail("import", error)
        }
    }
}
