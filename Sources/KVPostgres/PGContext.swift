// What the store's parts (writer, readers, listener, sweeper, queue) share:
// how to connect, the notification channel, the watch hub and the highest
// commit counter this process has seen.

import Foundation
import KVEngine
import Logging
import Synchronization

final class PGContext: Sendable {
    let conninfo: String
    let schema: String
    let options: PostgresOptions
    /// NOTIFY channel of this database (one per schema).
    let channel: String
    /// Identifies this store instance in notifications (its own are skipped).
    let instanceId = UUID().uuidString.lowercased()
    let hub = WatchHub()
    let logger: Logger

    private struct Counters {
        var counter: UInt64
        var batches = 0
    }
    private let counters: Mutex<Counters>

    /// Who hears of expiries and queue deadlines (the sweeper, the queue),
    /// wired by the store after its parts exist.
    struct Hooks {
        var expiryNoted: (@Sendable (Int64) -> Void)?
        var dueNoted: (@Sendable (Int64) -> Void)?
    }
    let hooks = Mutex(Hooks())

    /// A commit or another daemon set an expiry at `ms`.
    func noteExpiry(_ ms: Int64) { hooks.withLock { $0.expiryNoted }?(ms) }
    /// Something may become claimable in the queue at `ms`.
    func noteDue(_ ms: Int64) { hooks.withLock { $0.dueNoted }?(ms) }

    init(conninfo: String, options: PostgresOptions, counter: UInt64, logger: Logger) {
        self.conninfo = conninfo
        self.schema = options.schema
        self.options = options
        self.channel = "kvconnectd." + options.schema
        self.logger = logger
        counters = Mutex(Counters(counter: counter))
    }

    func connect() throws -> PGConnection {
        try PGConnection(conninfo: conninfo, searchPath: schema)
    }

    var counter: UInt64 { counters.withLock { $0.counter } }
    var batchesCommitted: Int { counters.withLock { $0.batches } }

    func noteCounter(_ c: UInt64, batch: Bool = false) {
        counters.withLock { s in
            if c > s.counter { s.counter = c }
            if batch { s.batches += 1 }
        }
    }

    static func wallClockMs() -> Int64 { WallClock.nowMs() }

    /// The NOTIFY statement for a change, or nil when nobody needs to know.
    func notifyQuery(counter: UInt64, keys: [Bytes]?, expiryMs: Int64?, dueMs: Int64?) -> PGQuery? {
        if keys?.isEmpty == true && dueMs == nil { return nil }
        let n = PGNotification(
            sender: instanceId, counter: counter, earliestExpiryMs: expiryMs,
            earliestDueMs: dueMs, keys: keys)
        return PGQuery(PGSQL.notify, [.text(channel), .text(n.payload)])
    }

    /// Runs `body` with a fresh connection attempt loop: retries connection
    /// losses and serialization failures until `deadline`, then gives up with
    /// `.unavailable`. Other errors are thrown at once.
    func withRetries<T>(
        conn: inout PGConnection?, until deadline: Int64, what: String,
        _ body: (PGConnection) throws -> T
    ) throws -> T {
        var delayMs: UInt32 = 20
        while true {
            do {
                if conn == nil || conn!.isBroken { conn = try connect() }
                return try body(conn!)
            } catch let e as PGError {
                conn?.rollbackQuietly()
                if e.kind == .other { throw e.asKVError }
                if e.kind == .connectionLost {
                    conn?.close()
                    conn = nil
                }
                if Self.wallClockMs() >= deadline {
                    throw KVError.unavailable("PostgreSQL unavailable (\(what)): \(e.message)")
                }
                if e.kind == .connectionLost {
                    usleep(delayMs * 1000)
                    delayMs = min(delayMs * 2, 500)
                }
            }
        }
    }
}
