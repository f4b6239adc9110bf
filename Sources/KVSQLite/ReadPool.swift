import CSQLite
import Foundation
import KVEngine

/// Pool of read-only connections; each is lent to one thread at a time.
final class ReadPool: @unchecked Sendable {
    private let cond = NSCondition()
    private var idle: [SQLiteConnection] = []
    private var total = 0
    private let maxConnections: Int
    private var closed = false
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
        cond.lock()
        while idle.isEmpty && !closed && total >= maxConnections { cond.wait() }
        if closed {
            cond.unlock()
            throw KVError.unavailable("shutting down")
        }
        var conn = idle.popLast()
        if conn == nil { total += 1 }
        cond.unlock()

        if conn == nil {
            do {
                conn = try open()
            } catch {
                cond.lock()
                total -= 1
                cond.signal()
                cond.unlock()
                throw error
            }
        }
        let c = conn!
        defer {
            cond.lock()
            if closed {
                c.close()
                total -= 1
            } else {
                idle.append(c)
            }
            cond.signal()
            cond.unlock()
        }
        return try body(c)
    }

    func close() {
        cond.lock()
        closed = true
        for c in idle { c.close() }
        total -= idle.count
        idle.removeAll()
        cond.broadcast()
        cond.unlock()
    }
}
