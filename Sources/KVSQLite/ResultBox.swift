import Threading

/// One-shot value handoff between threads (a result computed on the writer).
final class ResultBox<T: Sendable>: Sendable {
    private let value = ConditionLock<T?>(nil)

    func set(_ v: T) {
        value.withLock { $0 = v }
        value.broadcast()
    }

    func wait() -> T {
        value.wait { v in v.map { .done($0) } ?? .wait(timeoutMs: nil) }
    }

    /// nil if no value came within `timeoutMs`.
    func wait(timeoutMs: Int64) -> T? {
        let end = MonotonicClock.nowMs() + timeoutMs
        return value.wait { v in
            if let v { return .done(v) }
            let left = end - MonotonicClock.nowMs()
            return left > 0 ? .wait(timeoutMs: left) : .done(nil)
        }
    }
}
