import Foundation
import KVEngine
import KVSQLite

/// Opens the storage a database location names: the one place that maps a
/// location to a backend (daemon, `copy`).
enum StorageFactory {
    /// `synchronousFull` applies to SQLite; `passwordFile` to PostgreSQL.
    static func open(_ location: DatabaseLocation, passwordFile: String?, synchronousFull: Bool = true,
                     queueMaxLeases: Int = 10) throws -> any KVStorage {
        switch location {
        case .sqlite(let path):
            let dir = (path as NSString).deletingLastPathComponent
            if !dir.isEmpty {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            }
            var options = SQLiteStoreOptions()
            options.synchronousFull = synchronousFull
            options.queueMaxLeases = queueMaxLeases
            return try SQLiteStore(path: path, options: options)
        case .postgres(let uri):
            throw Settings.Invalid(description: "cannot open \(uri.masked): PostgreSQL support is not built in")
        }
    }

    /// A SQLite file another process (a daemon) has open.
    static func sqliteInUse(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: path) && DataOps.isInUse(db: path)
    }
}
