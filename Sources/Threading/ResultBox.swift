/// One-shot value handoff between threads: a result computed on another
/// thread (a writer's completion), waited for by a caller that must block.
public final class ResultBox<T: Sendable>: Sendable {
    private let value = ConditionLock<T?>(nil)

    public init() {}

    public func set(_ v: T) {
        value.withLock { $0 = v }
        value.broadcast()
    }

    public func wait() -> T {
        value.wait { v in v.map { .done($0) } ?? .wait(timeoutMs: nil) }
    }

    /// nil if no value came within `timeoutMs`.
    public func wait(timeoutMs: Int64) -> T? {
        let end = MonotonicClock.deadlineMs(after: timeoutMs)
        return value.wait { v in
            if let v { return .done(v) }
            let left = end - MonotonicClock.nowMs()
            return left > 0 ? .wait(timeoutMs: left) : .done(nil)
        }
    }
}
