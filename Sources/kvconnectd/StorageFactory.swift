import Foundation
import KVEngine
import KVPostgres
import KVSQLite

/// Opens the storage a database location names: the one place that maps a
/// location to a backend (daemon, `copy`).
enum StorageFactory {
    /// `options` apply to SQLite (PostgreSQL takes its queue poison limit);
    /// `passwordFile` to PostgreSQL.
    static func open(
        _ location: DatabaseLocation, passwordFile: String?,
        options: SQLiteStoreOptions = SQLiteStoreOptions()
    ) throws -> any KVStorage {
        switch location {
        case .sqlite(let path):
            let dir = (path as NSString).deletingLastPathComponent
            if !dir.isEmpty {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            }
            return try SQLiteStore(path: path, options: options)
        case .postgres(let uri):
            var url = uri.text
            if let passwordFile {
                guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                    throw Settings.Invalid(description: "cannot read password file \(passwordFile)")
                }
                url = uri.withPassword(text.trimmingCharacters(in: .newlines))
            }
            do {
                return try PostgresStore(url: url, options: PostgresOptions(queueMaxLeases: options.queueMaxLeases))
            } catch {
                // libpq names host and user, never the password; masked all the same.
                throw Settings.Invalid(
                    description: "cannot open PostgreSQL database \(uri.masked): \(PGMask.mask("\(error)"))")
            }
        }
    }

    /// A SQLite file another process (a daemon) has open.
    static func sqliteInUse(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: path) && DataOps.isInUse(db: path)
    }
}
