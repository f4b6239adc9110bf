import CSQLite
import KVEngine
import Threading

/// Pool of read-only connections; each is lent to one thread at a time.
final class ReadPool: Sendable {
    private struct State {
        var idle: [SQLiteConnection] = []
        var total = 0
        var closed = false
    }
    /// A condition: readers wait for a connection when all are lent.
    private let state = ConditionLock(State())
    private let maxConnections: Int
    private let path: String

    init(path: String, maxConnections: Int) {
        self.path = path
        self.maxConnections = Swift.max(1, maxConnections)
    }

    private func open() throws -> SQLiteConnection {
        let c = try SQLiteConnection(path: path, flags: SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX)
        c.persistWAL()  // whichever connection closes last keeps the -shm (see SQLiteConnection.persistWAL)
        try c.execScript("PRAGMA busy_timeout = 5000;")
        return c
    }

    func withConnection<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        // nil: none idle, open one (counted already).
        let lent: SQLiteConnection?? = state.wait { s in
            if s.closed { return .done(.none) }
            if let c = s.idle.popLast() { return .done(.some(c)) }
            if s.total < maxConnections {
                s.total += 1
                return .done(.some(nil))
            }
            return .wait(timeoutMs: nil)
        }
        guard let lent else { throw KVError.unavailable("shutting down") }
        let c: SQLiteConnection
        if let lent {
            c = lent
        } else {
            do {
                c = try open()
            } catch {
                state.withLock { $0.total -= 1 }
                state.signal()
                throw error
            }
        }
        defer {
            state.withLock { s in
                if s.closed {
                    c.close()
                    s.total -= 1
                } else {
                    s.idle.append(c)
                }
            }
            state.signal()
        }
        return try body(c)
    }

    func close() {
        state.withLock { s in
            s.closed = true
            for c in s.idle { c.close() }
            s.total -= s.idle.count
            s.idle.removeAll()
        }
        state.broadcast()
    }
}
