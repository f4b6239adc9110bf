import Foundation
import KVEngine
import Synchronization

/// Snapshot reads for watch sessions, shared: sessions of the same keys
/// woken by one commit (10,000 watchers of one key) take one read instead
/// of one each. A read serves every session woken *before* it started, so
/// each sees a snapshot at least as new as the commit that woke it. Reads of
/// one key list run one at a time (a session woken during a read waits for
/// the next one), so a session never gets an older snapshot after a newer.
final class WatchReads: Sendable {
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
    private struct State {
        /// Ticks at every wake-up and every read start: orders the two.
        var clock: UInt64 = 0
        var flights: [[Bytes]: Flights] = [:]
    }

    private let state = Mutex(State())

    init(readKeys: @escaping @Sendable ([Bytes]) throws -> [KVEntry?]) {
        self.readKeys = readKeys
    }

    /// Taken when a session is woken (or starts): reads started later serve it.
    func stamp() -> UInt64 {
        state.withLock { s in
            s.clock += 1
            return s.clock
        }
    }

    /// Calls `done` (on `queue`) with the entries of `keys` from a snapshot
    /// taken after `since`: joins the read in progress if it started later,
    /// else the next one, else starts one on `queue`. Never blocks: the
    /// engine's writer thread calls this for every woken session.
    func read(_ keys: [Bytes], since: UInt64, queue: DispatchQueue, done: @escaping Done) {
        let joined = state.withLock { s in
            if let f = s.flights[keys] {
                if f.started > since { f.current.append(done) } else { f.next.append(done) }
                return true
            }
            s.clock += 1
            s.flights[keys] = Flights(started: s.clock, current: [done])
            return false
        }
        if !joined { queue.async { self.run(keys, queue: queue) } }
    }

    /// Reads `keys` for the flight in progress, then for the next ones as
    /// long as sessions wait for them.
    private func run(_ keys: [Bytes], queue: DispatchQueue) {
        while true {
            let result = Result<[KVEntry?], any Error> { try readKeys(keys) }
            let flight: (waiters: [Done], more: Bool)? = state.withLock { s in
                guard let f = s.flights[keys] else { return nil }
                let waiters = f.current
                let more = !f.next.isEmpty
                if more {
                    s.clock += 1
                    f.started = s.clock
                    f.current = f.next
                    f.next = []
                } else {
                    s.flights[keys] = nil
                }
                return (waiters, more)
            }
            guard let (waiters, more) = flight else { return }
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
