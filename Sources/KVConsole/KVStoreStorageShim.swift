// TEMPORARY until the engine split lands (Tenant.store becomes `any
// KVStorage`): today's SQLite KVStore seen through the storage protocol, so
// the console codes only against KVStorage. Delete this file after merging main.

import Foundation
import KVEngine

extension KVStore: KVStorage {
    public var location: String { path }

    public func storageStats() throws -> StorageStats {
        func size(_ p: String) -> Int64 {
            var st = stat()
            return stat(p, &st) == 0 ? Int64(st.st_size) : 0
        }
        var entries: Int64 = 0
        var start: Bytes = []
        while true {
            let page = try snapshotRead([ReadRange(start: start, end: [0xFF], limit: 1000)])[0]
            entries += Int64(page.count)
            guard page.count == 1000, let last = page.last else { break }
            start = last.key + [0]
        }
        return StorageStats(sizeBytes: size(path) + size(path + "-wal"), entries: entries)
    }
}
