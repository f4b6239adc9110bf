// One LISTEN connection per store: commits and sweeps of other daemons
// arrive as notifications and wake the local watchers of their keys (and
// the local sweeper and queue dispatcher, when they set an expiry or an
// enqueue). When the connection is lost, notifications may have been
// missed: after reconnecting, every watcher is woken once (each re-reads and
// reports only a real change), so watch streams survive a PostgreSQL restart.

import Foundation
import KVEngine
import Synchronization
import Threading

final class PGListener: Sendable {
    private let ctx: PGContext
    private struct State {
        var stopped = false
        var thread: JoinableThread?
        var connected = false
        var reconnects = 0
    }
    private let state = Mutex(State())

    init(ctx: PGContext) {
        self.ctx = ctx
    }

    var isConnected: Bool { state.withLock { $0.connected } }
    /// Times the LISTEN connection was re-established after a loss.
    var reconnects: Int { state.withLock { $0.reconnects } }

    /// Connects and LISTENs before returning, so no commit after `start` is
    /// missed. The thread holds the listener until `stop` ends it.
    func start() throws {
        let c = try listen()
        state.withLock { $0.connected = true }
        do {
            let t = try JoinableThread(name: "kvpg-listener") { [self] in loop(c) }
            state.withLock { $0.thread = t }
        } catch {
            c.close()
            throw error
        }
    }

    /// Waits for the thread (it notices within one notification wait).
    func stop() {
        let t = state.withLock { s in
            s.stopped = true
            return s.thread
        }
        t?.join()
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

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
                    state.withLock { s in
                        s.connected = true
                        s.reconnects += 1
                    }
                    delayMs = 20
                    ctx.logger.notice("watch notifications: reconnected to PostgreSQL; waking every watcher")
                    PGMetrics.reconnects.increment()
                    ctx.hub.notifyAll()
                    // Expiries and enqueues may also have been missed.
                    ctx.noteExpiry(0)
                    ctx.noteDue(0)
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
                state.withLock { $0.connected = false }
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
        if let e = n.earliestExpiryMs { ctx.noteExpiry(e) }
        if let d = n.earliestDueMs { ctx.noteDue(d) }
        if let keys = n.keys {
            ctx.hub.notify(changed: keys)
        } else {
            ctx.hub.notifyAll()
        }
    }
}
