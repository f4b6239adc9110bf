import Foundation
import KVEngine

/// Snapshot reads for watch sessions, shared: sessions of the same keys
/// woken by one commit (10,000 watchers of one key) take one read instead
/// of one each. A read serves every session woken *before* it started, so
/// each sees a snapshot at least as new as the commit that woke it. Reads of
/// one key list run one at a time (a session woken during a read waits for
/// the next one), so a session never gets an older snapshot after a newer.
final class WatchReads: @unchecked Sendable {
    typealias Done = @Sendable (Result<[KVEntry?], any Error>) -> Void

    /// The read in progress for a key list and who waits for the next one.
    /// A class: appending to a struct's arrays read out of the dictionary
    /// copied them each time (10,000 waiters: quadratic, seconds per commit).
    private final class Flights {
        var started: UInt64
        var current: [Done]
        var next: [Done] = []
        init(started: UInt64, current: [Done]) {
            self.started = started
            self.current = current
        }
    }

    private let readKeys: @Sendable ([Bytes]) throws -> [KVEntry?]
    private let lock = NSLock()
    /// Ticks at every wake-up and every read start: orders the two.
    private var clock: UInt64 = 0
    private var flights: [[Bytes]: Flights] = [:]

    init(readKeys: @escaping @Sendable ([Bytes]) throws -> [KVEntry?]) {
        self.readKeys = readKeys
    }

    /// Taken when a session is woken (or starts): reads started later serve it.
    func stamp() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        clock += 1
        return clock
    }

    /// Calls `done` (on `queue`) with the entries of `keys` from a snapshot
    /// taken after `since`: joins the read in progress if it started later,
    /// else the next one, else starts one on `queue`. Never blocks: the
    /// engine's writer thread calls this for every woken session.
    func read(_ keys: [Bytes], since: UInt64, queue: DispatchQueue, done: @escaping Done) {
        lock.lock()
        if let f = flights[keys] {
            if f.started > since { f.current.append(done) } else { f.next.append(done) }
            lock.unlock()
            return
        }
        clock += 1
        flights[keys] = Flights(started: clock, current: [done])
        lock.unlock()
        queue.async { self.run(keys, queue: queue) }
    }

    /// Reads `keys` for the flight in progress, then for the next ones as
    /// long as sessions wait for them.
    private func run(_ keys: [Bytes], queue: DispatchQueue) {
        while true {
            let result = Result<[KVEntry?], any Error> { try readKeys(keys) }
            lock.lock()
            guard let f = flights[keys] else {
                lock.unlock()
                return
            }
            let waiters = f.current
            let more = !f.next.isEmpty
            if more {
                clock += 1
                f.started = clock
                f.current = f.next
                f.next = []
            } else {
                flights[keys] = nil
            }
            lock.unlock()
            // Thousands of sessions each encode and queue a frame: spread them.
            let batch = 256
            for start in stride(from: 0, to: waiters.count, by: batch) {
                let slice = waiters[start..<min(start + batch, waiters.count)]
                queue.async { for w in slice { w(result) } }
            }
            if !more { return }
        }
    }
}
