import KVEngine
import Foundation

/// One-shot value handoff between threads.
final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let cond = NSCondition()
    private var value: T?

    func set(_ v: T) {
        cond.lock()
        value = v
        cond.broadcast()
        cond.unlock()
    }

    func wait() -> T {
        cond.lock()
        defer { cond.unlock() }
        while value == nil { cond.wait() }
        return value!
    }

    func wait(until deadline: Date) -> T? {
        cond.lock()
        defer { cond.unlock() }
        while value == nil {
            if !cond.wait(until: deadline) { break }
        }
        return value
    }
}
