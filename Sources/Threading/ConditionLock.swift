import Glibc

/// What a `ConditionLock.wait` step decided.
public enum WaitStep<Result> {
    /// Stop waiting and return this.
    case done(Result)
    /// Release the lock until signalled or `timeoutMs` passed (nil: no limit),
    /// then run the step again.
    case wait(timeoutMs: Int64?)
}

/// State guarded by a lock, with a condition variable for the threads that
/// wait for it to change. Use it only where a thread really waits; state that
/// is only read and written goes in a `Mutex` (Synchronization), which has no
/// condition variable.
///
/// @unchecked Sendable: `state` is only touched between `pthread_mutex_lock`
/// and `pthread_mutex_unlock` on `mutex`, and the pointers never change.
public final class ConditionLock<State>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var state: State

    public init(_ initial: State) {
        state = initial
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        // Timeouts are durations: a wall-clock step must not stretch them.
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    public func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }

    /// Runs `step` under the lock until it returns `.done`; between runs the
    /// lock is released while the thread sleeps (see `WaitStep.wait`).
    /// Wake-ups may be spurious: `step` re-checks what it waits for.
    public func wait<R>(_ step: (inout State) throws -> WaitStep<R>) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while true {
            switch try step(&state) {
            case .done(let r):
                return r
            case .wait(let timeoutMs?):
                var ts = timespec()
                clock_gettime(CLOCK_MONOTONIC, &ts)
                let ns = Int64(ts.tv_nsec) + max(0, timeoutMs) % 1000 * 1_000_000
                ts.tv_sec += Int(max(0, timeoutMs) / 1000 + ns / 1_000_000_000)
                ts.tv_nsec = Int(ns % 1_000_000_000)
                _ = pthread_cond_timedwait(cond, mutex, &ts)
            case .wait(nil):
                _ = pthread_cond_wait(cond, mutex)
            }
        }
    }

    /// Wakes one waiting thread (call after changing the state under the lock).
    public func signal() { pthread_cond_signal(cond) }

    /// Wakes every waiting thread.
    public func broadcast() { pthread_cond_broadcast(cond) }
}
