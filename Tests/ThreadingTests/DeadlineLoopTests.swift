import Foundation
import Synchronization
import Threading
import XCTest

/// The deadline loop without a database: what runs `work` when, and stopping.
final class DeadlineLoopTests: XCTestCase {
    /// Counts `work` runs and lets the test pick what each run returns.
    final class Probe: Sendable {
        struct State {
            var runs: [Int64] = []
            var next: Int64? = nil
        }
        let state = ConditionLock(State())
        let finished = Atomic<Int>(0)

        func work() -> Int64? {
            state.withLock { s in
                s.runs.append(DeadlineLoopTests.nowMs())
                return s.next
            }
        }
        var runs: Int { state.withLock { $0.runs.count } }
        func setNext(_ ms: Int64?) { state.withLock { $0.next = ms } }

        /// Waits (bounded) until `work` ran `n` times in all; the count.
        func waitForRuns(_ n: Int, timeoutMs: Int64 = 5_000) -> Int {
            let end = DeadlineLoopTests.nowMs() + timeoutMs
            while runs < n && DeadlineLoopTests.nowMs() < end { usleep(2_000) }
            return runs
        }
    }

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    private func makeLoop(_ p: Probe, maxIdleMs: Int64 = 60_000) throws -> DeadlineLoop {
        let loop = DeadlineLoop(name: "test-loop", maxIdleMs: maxIdleMs, clock: { DeadlineLoopTests.nowMs() })
        try loop.start(work: { p.work() }, finish: { p.finished.add(1, ordering: .relaxed) })
        return loop
    }

    func testRunsOnceAtStartThenSleeps() throws {
        let p = Probe()
        let loop = try makeLoop(p)
        defer { loop.stop() }
        XCTAssertEqual(p.waitForRuns(1), 1)
        usleep(100_000)
        XCTAssertEqual(p.runs, 1, "no deadline: the loop sleeps until maxIdle")
    }

    func testWakeEarlierRunsAtTheNewDeadline() throws {
        let p = Probe()
        p.setNext(Self.nowMs() + 60_000)
        let loop = try makeLoop(p)
        defer { loop.stop() }
        XCTAssertEqual(p.waitForRuns(1), 1)
        let at = Self.nowMs() + 150
        loop.wake(at: at)
        XCTAssertEqual(p.waitForRuns(2), 2)
        let ran = p.state.withLock { $0.runs[1] }
        XCTAssertGreaterThanOrEqual(ran, at, "not before the deadline")
        XCTAssertLessThan(ran, at + 2_000)
    }

    func testWakeLaterDoesNotPostponeTheDeadline() throws {
        let p = Probe()
        let first = Self.nowMs() + 200
        p.setNext(first)
        let loop = try makeLoop(p)
        defer { loop.stop() }
        XCTAssertEqual(p.waitForRuns(1), 1)
        p.setNext(nil)
        loop.wake(at: Self.nowMs() + 60_000)
        XCTAssertEqual(p.waitForRuns(2), 2)
        XCTAssertGreaterThanOrEqual(p.state.withLock { $0.runs[1] }, first)
    }

    /// A wake-up for a deadline still in the future wakes the thread early
    /// (as a spurious wake-up would); it must go back to sleep, not run.
    func testEarlyWakeUpSleepsAgainUntilTheDeadline() throws {
        let p = Probe()
        p.setNext(Self.nowMs() + 60_000)
        let loop = try makeLoop(p)
        defer { loop.stop() }
        XCTAssertEqual(p.waitForRuns(1), 1)
        let at = Self.nowMs() + 300
        loop.wake(at: at)
        usleep(100_000)
        // Read the count before the clock: a second run is at `at` or later.
        let n = p.runs
        if Self.nowMs() < at { XCTAssertEqual(n, 1, "woken before the deadline: sleeps again") }
        XCTAssertEqual(p.waitForRuns(2), 2)
        XCTAssertGreaterThanOrEqual(p.state.withLock { $0.runs[1] }, at)
    }

    func testDeadlineInThePastRunsAtOnce() throws {
        let p = Probe()
        p.setNext(Self.nowMs() - 10_000)
        let loop = try makeLoop(p)
        defer { loop.stop() }
        XCTAssertGreaterThanOrEqual(p.waitForRuns(3, timeoutMs: 2_000), 3, "a passed deadline is due now")
        p.setNext(nil)
        let start = Self.nowMs()
        loop.wake(at: start - 5_000)
        let before = p.runs
        XCTAssertGreaterThan(p.waitForRuns(before + 1, timeoutMs: 2_000), before)
    }

    func testNoDeadlineRunsAgainAfterMaxIdle() throws {
        let p = Probe()
        let loop = try makeLoop(p, maxIdleMs: 100)
        defer { loop.stop() }
        XCTAssertEqual(p.waitForRuns(2), 2)
        let (first, second) = p.state.withLock { ($0.runs[0], $0.runs[1]) }
        XCTAssertGreaterThanOrEqual(second - first, 100, "slept maxIdle")
        XCTAssertLessThan(second - first, 2_000)
    }

    func testStopWhileSleepingReturnsPromptlyAndFinishes() throws {
        let p = Probe()
        let loop = try makeLoop(p)
        XCTAssertEqual(p.waitForRuns(1), 1)
        let start = Self.nowMs()
        loop.stop()
        XCTAssertLessThan(Self.nowMs() - start, 1_000, "stop wakes the sleeping thread and joins it")
        XCTAssertEqual(p.finished.load(ordering: .relaxed), 1, "finish ran before stop returned")
        XCTAssertTrue(loop.isStopped)
        loop.wake()
        usleep(50_000)
        XCTAssertEqual(p.runs, 1, "no work after stop")
        loop.stop()  // twice is harmless
    }

    func testStopFromWorkDoesNotDeadlock() throws {
        let done = ConditionLock(false)
        let loop = DeadlineLoop(name: "test-loop", clock: { DeadlineLoopTests.nowMs() })
        try loop.start(
            work: {
                loop.stop()
                return nil
            },
            finish: {
                done.withLock { $0 = true }
                done.broadcast()
            })
        let finished = done.wait { d in d ? .done(true) : .wait(timeoutMs: 5_000) }
        XCTAssertTrue(finished)
    }

    func testStoppedLoopIsFreed() throws {
        weak var weakLoop: DeadlineLoop?
        do {
            let p = Probe()
            let loop = try makeLoop(p)
            weakLoop = loop
            XCTAssertEqual(p.waitForRuns(1), 1)
            loop.stop()
        }
        XCTAssertNil(weakLoop, "the thread let go of the loop when it ended")
    }
}
