import Synchronization

/// A thread that sleeps until the next deadline or a wake-up, runs its work,
/// and repeats until stopped: the one loop behind the expiry sweepers and the
/// queue dispatchers.
///
/// `work` runs at once after `start`, then whenever the deadline passes. It
/// returns the next deadline it knows of (nil: none); `wake(at:)` from other
/// threads can only make the deadline earlier. With no deadline the loop
/// still runs `work` after `maxIdleMs`, a safety net for deadlines learned
/// wrong and for wall-clock steps. Deadlines are milliseconds of `clock`.
public final class DeadlineLoop: Sendable {
    private struct State {
        /// nil: none known (sleep `maxIdleMs`).
        var deadlineMs: Int64? = Int64.min
        var idleSinceMs: Int64 = 0
        var stopped = false
    }

    private let state = ConditionLock(State())
    private let thread = Mutex<JoinableThread?>(nil)
    private let maxIdleMs: Int64
    private let clock: @Sendable () -> Int64

    private let name: String

    public init(name: String, maxIdleMs: Int64 = 60_000, clock: @escaping @Sendable () -> Int64) {
        self.name = name
        self.maxIdleMs = maxIdleMs
        self.clock = clock
    }

    /// Starts the thread (once). `finish` runs on it after the last `work`
    /// (to close what only that thread uses). Both may hold the loop's owner:
    /// the thread lets go of them when `stop` ends it.
    public func start(
        work: @escaping @Sendable () -> Int64?, finish: @escaping @Sendable () -> Void = {}
    ) throws {
        let t = try JoinableThread(name: name) { [self] in
            while sleepUntilDue() {
                let next = work()
                state.withLock { s in
                    if let next, s.deadlineMs.map({ next < $0 }) ?? true { s.deadlineMs = next }
                    s.idleSinceMs = clock()
                }
            }
            finish()
        }
        thread.withLock { $0 = t }
    }

    /// Run `work` at `ms` (now or at once if it has passed) unless it is
    /// already due sooner.
    public func wake(at ms: Int64 = Int64.min) {
        let earlier = state.withLock { s in
            guard s.deadlineMs.map({ ms < $0 }) ?? true else { return false }
            s.deadlineMs = ms
            return true
        }
        if earlier { state.signal() }
    }

    /// Ends the loop after the `work` in progress, if any, and waits for the
    /// thread (`wait: false`, or when called from `work` itself: lets it end
    /// on its own).
    public func stop(wait: Bool = true) {
        state.withLock { $0.stopped = true }
        state.broadcast()
        let t = thread.withLock { $0 }
        if wait { t?.join() } else { t?.detach() }
    }

    public var isStopped: Bool { state.withLock { $0.stopped } }

    /// Sleeps until the deadline passes (then clears it: true) or until stopped (false).
    private func sleepUntilDue() -> Bool {
        state.wait { s in
            if s.stopped { return .done(false) }
            let now = clock()
            let due = s.deadlineMs ?? (s.idleSinceMs + maxIdleMs)
            if due <= now {
                s.deadlineMs = nil
                return .done(true)
            }
            return .wait(timeoutMs: min(due - now, maxIdleMs))
        }
    }
}
