// One LISTEN connection per store: commits and sweeps of other daemons
// arrive as notifications and wake the local watchers of their keys (and
// the local sweeper and queue dispatcher, when they set an expiry or an
// enqueue). When the connection is lost, notifications may have been
// missed: after reconnecting, every watcher is woken once (each re-reads and
// reports only a real change), so watch streams survive a PostgreSQL restart.

import Foundation
import KVEngine

final class PGListener: @unchecked Sendable {
    private let ctx: PGContext
    private let lock = NSLock()
    private var stopped = false
    private var thread: Thread?
    private var _connected = false
    private var _reconnects = 0

    init(ctx: PGContext) {
        self.ctx = ctx
    }

    var isConnected: Bool {
        lock.lock()
        defer { lock.unlock() }
        return _connected
    }
    /// Times the LISTEN connection was re-established after a loss.
    var reconnects: Int {
        lock.lock()
        defer { lock.unlock() }
        return _reconnects
    }

    /// Connects and LISTENs before returning, so no commit after `start` is missed.
    func start() throws {
        let c = try listen()
        let t = Thread { [self] in self.loop(c) }
        t.name = "kvpg-listener"
        lock.lock()
        thread = t
        _connected = true
        lock.unlock()
        t.start()
    }

    func stop() {
        lock.lock()
        stopped = true
        thread = nil
        lock.unlock()
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    private func listen() throws -> PGConnection {
        let c = try ctx.connect()
        try c.execScript("LISTEN \(PGConnection.quoteIdentifier(ctx.channel))")
        return c
    }

    private func loop(_ first: PGConnection) {
        var conn: PGConnection? = first
        var delayMs: UInt32 = 20
        while !isStopped {
            guard let c = conn else {
                do {
                    conn = try listen()
                    lock.lock()
                    _connected = true
                    _reconnects += 1
                    lock.unlock()
                    delayMs = 20
                    ctx.logger.notice("watch notifications: reconnected to PostgreSQL; waking every watcher")
                    PGMetrics.reconnects.increment()
                    ctx.hub.notifyAll()
                    // Expiries and enqueues may also have been missed.
                    ctx.onExpiryNoted?(0)
                    ctx.onDueNoted?(0)
                } catch {
                    usleep(delayMs * 1000)
                    delayMs = min(delayMs * 2, 1000)
                }
                continue
            }
            do {
                // Short timeout so `stop` is noticed promptly.
                for (_, payload) in try c.waitForNotifications(timeoutMs: 200) {
                    handle(payload)
                }
            } catch {
                ctx.logger.warning("watch notifications: connection lost (\(error)); reconnecting")
                lock.lock()
                _connected = false
                lock.unlock()
                c.close()
                conn = nil
            }
        }
        conn?.close()
    }

    private func handle(_ payload: String) {
        guard let n = PGNotification.parse(payload) else {
            ctx.logger.warning("watch notifications: unreadable payload; waking every watcher")
            ctx.hub.notifyAll()
            return
        }
        ctx.noteCounter(n.counter)
        if n.sender == ctx.instanceId { return }  // this process already woke its watchers
        if let e = n.earliestExpiryMs { ctx.onExpiryNoted?(e) }
        if let d = n.earliestDueMs { ctx.onDueNoted?(d) }
        if let keys = n.keys {
            ctx.hub.notify(changed: keys)
        } else {
            ctx.hub.notifyAll()
        }
    }
}
