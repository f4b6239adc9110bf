// `kvconnectd pitr list | checkout`: choosing a point-in-time-recovery
// target on a PostgreSQL-backed database, in the spirit of denokv's
// `pitr list` / `pitr checkout`. The recovery itself is PostgreSQL's (base
// backup + WAL archive + recovery_target_xid); docs/ha.md has the steps.

import ArgumentParser
import Foundation
import KVEngine
import KVPostgres

struct Pitr: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Point-in-time recovery on PostgreSQL: list recent commits, print the recovery settings for one.",
        discussion: """
            Needs a PostgreSQL database (a postgres:// URI; --database or KVCONNECTD_DATABASE).
            SQLite databases use `kvconnectd backup` instead (see docs/ha.md).
            """,
        subcommands: [PitrList.self, PitrCheckout.self])
}

struct PitrTarget: ParsableArguments {
    @Option(
        help:
            "The PostgreSQL database (postgres:// URI; default KVCONNECTD_DATABASE). No password here: use PGPASSWORD or .pgpass."
    )
    var database: String?
    @Option(help: "PostgreSQL schema holding kvconnectd's tables.")
    var schema = "kvconnectd"

    func uri() throws -> String {
        guard let text = database ?? ProcessInfo.processInfo.environment["KVCONNECTD_DATABASE"] else {
            throw ValidationError("no database: give --database postgres://… or set KVCONNECTD_DATABASE")
        }
        guard PostgresURI.isPostgres(text) else {
            throw ValidationError(
                "pitr needs a PostgreSQL database (postgres:// URI); for SQLite use `kvconnectd backup` (docs/ha.md)")
        }
        if database != nil, try PostgresURI(text).hasPassword {
            throw ValidationError(
                "--database holds a password, which every local user can read in the process list: use PGPASSWORD or a .pgpass file"
            )
        }
        return text
    }
}

private func hex(_ b: Bytes) -> String { b.map { String(format: "%02x", $0) }.joined() }

private func iso(_ ms: Int64) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
}

struct PitrList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Recent commits, newest first: versionstamp, commit time, PostgreSQL transaction id.",
        discussion: "Commits are remembered for the commit-marker retention of the database (10 minutes by default).")
    @OptionGroup var target: PitrTarget
    @Option(help: "How many commits to list.")
    var limit = 20

    func run() throws {
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
        let records: [CommitRecord]
        do {
            records = try PostgresCommitLog.recent(url: try target.uri(), schema: target.schema, limit: limit)
        } catch let e as ValidationError {
            throw e
        } catch {
            FileHandle.standardError.write(Data("kvconnectd pitr list: \(error)\n".utf8))
            throw ExitCode(2)
        }
        print("versionstamp          commit time (UTC)              xid         writes")
        for r in records {
            let writes =
                (Versionstamps.counter(of: r.lastVersionstamp) ?? 0)
                - (Versionstamps.counter(of: r.firstVersionstamp) ?? 0) + 1
            let time = iso(r.committedAtMs) + (r.exactTime ? " " : "~")
            print(
                "\(hex(r.lastVersionstamp))  \(time.padding(toLength: 30, withPad: " ", startingAt: 0)) \(r.xid.padding(toLength: 11, withPad: " ", startingAt: 0)) \(writes)"
            )
        }
        if let r = records.first, !r.exactTime {
            print("# ~ = transaction start time; set track_commit_timestamp = on in PostgreSQL for exact commit times")
        }
    }
}

struct PitrCheckout: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkout",
        abstract: "Print the PostgreSQL recovery settings that restore the database to just after a versionstamp.",
        discussion: """
            Recovery stops right after the transaction that committed the versionstamp
            (recovery_target_xid, inclusive); writes committed in the same group-commit
            transaction are included too (they are listed). Steps: docs/ha.md.
            """)
    @OptionGroup var target: PitrTarget
    @Argument(help: "The versionstamp (20 hex digits, as `pitr list` prints it).")
    var versionstamp: String
    @Option(help: "Directory of the WAL archive (for restore_command).")
    var archive = "/path/to/wal-archive"

    func run() throws {
        let digits = Array(versionstamp.lowercased().utf8)
        guard digits.count == 20, digits.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw ValidationError("invalid versionstamp '\(versionstamp)': expected 20 hex digits")
        }
        let vs: Bytes = stride(from: 0, to: 20, by: 2).map {
            UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)!
        }
        let record: CommitRecord?
        do {
            record = try PostgresCommitLog.commit(containing: vs, url: try target.uri(), schema: target.schema)
        } catch let e as ValidationError {
            throw e
        } catch {
            FileHandle.standardError.write(Data("kvconnectd pitr checkout: \(error)\n".utf8))
            throw ExitCode(2)
        }
        guard let r = record else {
            FileHandle.standardError.write(
                Data(
                    "kvconnectd pitr checkout: versionstamp \(versionstamp) is not among the remembered commits (see `kvconnectd pitr list`); pick a time with recovery_target_time instead (docs/ha.md)\n"
                        .utf8))
            throw ExitCode(1)
        }
        print("# Recovery to just after versionstamp \(versionstamp.lowercased()):")
        print(
            "# PostgreSQL transaction \(r.xid), committed \(iso(r.committedAtMs))\(r.exactTime ? "" : " (transaction start)"),"
        )
        print("# holding versionstamps \(hex(r.firstVersionstamp)) … \(hex(r.lastVersionstamp)).")
        print("# Restore a base backup taken before that moment into a new data directory, add these")
        print("# settings to its postgresql.conf, create recovery.signal there and start it (docs/ha.md):")
        print("restore_command = 'cp \(archive)/%f %p'")
        print("recovery_target_xid = '\(r.xid)'")
        print("recovery_target_inclusive = 'on'")
        print("recovery_target_action = 'promote'")
    }
}
