// What the store's parts (writer, readers, listener, sweeper, queue) share:
// how to connect, the notification channel, the watch hub and the highest
// commit counter this process has seen.

import Foundation
import KVEngine
import Logging

final class PGContext: @unchecked Sendable {
    let conninfo: String
    let schema: String
    let options: PostgresOptions
    /// NOTIFY channel of this database (one per schema).
    let channel: String
    /// Identifies this store instance in notifications (its own are skipped).
    let instanceId = UUID().uuidString.lowercased()
    let hub = WatchHub()
    let logger: Logger

    private let lock = NSLock()
    private var _counter: UInt64
    private var _batches = 0

    /// Wired by the store after its parts exist.
    var onExpiryNoted: (@Sendable (Int64) -> Void)?
    var onDueNoted: (@Sendable (Int64) -> Void)?

    init(conninfo: String, options: PostgresOptions, counter: UInt64, logger: Logger) {
        self.conninfo = conninfo
        self.schema = options.schema
        self.options = options
        self.channel = "kvconnectd." + options.schema
        self.logger = logger
        _counter = counter
    }

    func connect() throws -> PGConnection {
        try PGConnection(conninfo: conninfo, searchPath: schema)
    }

    var counter: UInt64 {
        lock.lock()
        defer { lock.unlock() }
        return _counter
    }
    var batchesCommitted: Int {
        lock.lock()
        defer { lock.unlock() }
        return _batches
    }

    func noteCounter(_ c: UInt64, batch: Bool = false) {
        lock.lock()
        if c > _counter { _counter = c }
        if batch { _batches += 1 }
        lock.unlock()
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
