import Foundation
import KVEngine
import Synchronization

/// Storage statistics per database, computed at most once per `ttlSeconds`
/// (they scan the database).
final class StatsCache: Sendable {
    let ttlSeconds: Double
    private let entries = Mutex<[String: (at: Double, stats: StorageStats)]>([:])

    init(ttlSeconds: Double) { self.ttlSeconds = ttlSeconds }

    func get(_ name: String, load: () -> StorageStats?) -> StorageStats? {
        let now = Date().timeIntervalSince1970
        if let e = entries.withLock({ $0[name] }), now - e.at < ttlSeconds { return e.stats }
        guard let fresh = load() else { return nil }
        entries.withLock { $0[name] = (now, fresh) }
        return fresh
    }
}
