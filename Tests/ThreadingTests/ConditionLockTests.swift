import Foundation
import Threading
import XCTest

final class ConditionLockTests: XCTestCase {
    func testWaitReturnsWhenAnotherThreadChangesTheState() throws {
        let box = ConditionLock<Int?>(nil)
        let t = try JoinableThread(name: "test-setter") {
            usleep(50_000)
            box.withLock { $0 = 42 }
            box.broadcast()
        }
        defer { t.join() }
        XCTAssertEqual(box.wait { v in v.map { .done($0) } ?? .wait(timeoutMs: nil) }, 42)
    }

    func testTimedWaitGivesUp() {
        let box = ConditionLock(0)
        let start = Date()
        var rounds = 0
        let r: Int? = box.wait { _ in
            rounds += 1
            return rounds > 1 ? .done(nil) : .wait(timeoutMs: 100)
        }
        XCTAssertNil(r)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.09)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }

    /// A signal without the awaited change re-runs the step, which waits again.
    func testSpuriousSignalIsRechecked() throws {
        let box = ConditionLock((ready: false, checks: 0))
        let t = try JoinableThread(name: "test-signaller") {
            usleep(30_000)
            box.broadcast()  // nothing changed
            usleep(30_000)
            box.withLock { $0.ready = true }
            box.broadcast()
        }
        defer { t.join() }
        let checks = box.wait { s in
            s.checks += 1
            return s.ready ? .done(s.checks) : .wait(timeoutMs: 5_000)
        }
        XCTAssertGreaterThanOrEqual(checks, 2)
    }
}

extension ConditionLockTests {
    /// A timeout too large to add to the clock means no limit, not a crash.
    func testHugeTimeoutSaturates() {
        let box = ResultBox<Int>()
        box.set(7)
        XCTAssertEqual(box.wait(timeoutMs: Int64.max), 7)
        XCTAssertEqual(MonotonicClock.deadlineMs(after: Int64.max), Int64.max)
    }
}

final class JoinableThreadTests: XCTestCase {
    func testIsCurrentAndJoin() throws {
        let seen = ConditionLock<Bool?>(nil)
        let holder = ConditionLock<JoinableThread?>(nil)
        let t = try JoinableThread(name: "test-current") {
            let me = holder.wait { h in h.map { .done($0) } ?? .wait(timeoutMs: nil) }
            seen.withLock { $0 = me.isCurrent }
        }
        holder.withLock { $0 = t }
        holder.broadcast()
        t.join()
        XCTAssertEqual(seen.withLock { $0 }, true)
        XCTAssertFalse(t.isCurrent)
        t.join()  // twice is harmless
    }
}
