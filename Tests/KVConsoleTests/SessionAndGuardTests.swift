import Synchronization
import XCTest
@testable import KVConsole

final class Clock: Sendable {
    let t = Mutex<Double>(1000)
    func now() -> Double { t.withLock { $0 } }
    func advance(_ s: Double) { t.withLock { $0 += s } }
}

final class SessionAndGuardTests: XCTestCase {
    func testSessionsExpireWhenIdleAndAtTheirMaximumAge() {
        let clock = Clock()
        let store = SessionStore(idleSeconds: 60, maxSeconds: 300, clock: { clock.now() })
        let s = store.create(tokenDigest: [1])
        XCTAssertEqual(s.id.count, 64)
        XCTAssertNotEqual(s.id, s.csrfToken)
        clock.advance(50)
        XCTAssertNotNil(store.lookup(s.id))  // used: idle timer restarts
        clock.advance(50)
        XCTAssertNotNil(store.lookup(s.id))
        clock.advance(61)
        XCTAssertNil(store.lookup(s.id), "idle too long")
        let s2 = store.create(tokenDigest: [1])
        for _ in 0..<6 {
            clock.advance(55)
            _ = store.lookup(s2.id)
        }
        XCTAssertNil(store.lookup(s2.id), "past the maximum age even when used")
        let s3 = store.create(tokenDigest: [1])
        store.remove(s3.id)
        XCTAssertNil(store.lookup(s3.id), "signed out")
        XCTAssertNil(store.lookup("guess"))
    }

    func testSessionCountIsBounded() {
        let store = SessionStore(idleSeconds: 60, maxSeconds: 300, maxSessions: 3)
        let first = store.create(tokenDigest: [1])
        for _ in 0..<5 { _ = store.create(tokenDigest: [1]) }
        XCTAssertEqual(store.count, 3)
        XCTAssertNil(store.lookup(first.id))
    }

    func testFailedSignInsAreThrottledPerAddress() {
        let clock = Clock()
        let t = SignInThrottle(maxFailures: 3, windowSeconds: 100, clock: { clock.now() })
        for _ in 0..<3 {
            XCTAssertNil(t.retryAfter("10.0.0.1"))
            t.recordFailure("10.0.0.1")
            clock.advance(10)
        }
        XCTAssertEqual(t.retryAfter("10.0.0.1"), 70)
        XCTAssertNil(t.retryAfter("10.0.0.2"), "other addresses are not affected")
        clock.advance(71)
        XCTAssertNil(t.retryAfter("10.0.0.1"), "the oldest failure aged out")
        t.recordFailure("10.0.0.1")
        t.recordSuccess("10.0.0.1")
        XCTAssertNil(t.retryAfter("10.0.0.1"))
    }

    func testCrossSiteRequestsAreRecognised() {
        func reason(_ h: [String: String]) -> String? { RequestGuard.crossSiteReason { h[$0] } }
        XCTAssertNil(
            reason(["host": "127.0.0.1:4512", "origin": "http://127.0.0.1:4512", "sec-fetch-site": "same-origin"]))
        XCTAssertNil(reason(["host": "kv.example.com"]), "non-browser clients send neither header")
        XCTAssertNotNil(reason(["host": "127.0.0.1:4512", "origin": "http://evil.example"]))
        XCTAssertNotNil(reason(["host": "127.0.0.1:4512", "origin": "null"]))
        XCTAssertNotNil(reason(["host": "127.0.0.1:4512", "sec-fetch-site": "cross-site"]))
        XCTAssertNotNil(reason(["host": "127.0.0.1:4512", "sec-fetch-site": "same-site"]))
        XCTAssertTrue(RequestGuard.isJSON("application/json; charset=utf-8"))
        XCTAssertFalse(RequestGuard.isJSON("text/plain"))
        XCTAssertFalse(RequestGuard.isJSON(nil))
        XCTAssertTrue(RequestGuard.tokensMatch("abc", "abc"))
        XCTAssertFalse(RequestGuard.tokensMatch("abd", "abc"))
        XCTAssertFalse(RequestGuard.tokensMatch(nil, "abc"))
        XCTAssertEqual(RequestGuard.cookie("kvconsole_session", in: "a=1; kvconsole_session=xyz; b=2"), "xyz")
        XCTAssertNil(RequestGuard.cookie("kvconsole_session", in: "a=1"))
    }

    func testServerStatsRatesFromRunningTotals() {
        final class Source: ConsoleServerStats {
            let c = Mutex(ServerCounters())
            func counters() -> ServerCounters { c.withLock { $0 } }
        }
        let src = Source()
        let h = StatsHistory(source: src, capacity: 3)
        h.sample(now: 0)
        XCTAssertTrue(h.samples.isEmpty, "the first call only sets the baseline")
        src.c.withLock { c in
            c.requests = 8
            c.requestSeconds = 0.0625
            c.writes = 4
            c.commitBatches = 2
            c.commitSeconds = 0.015625
        }
        h.sample(now: 2)
        XCTAssertEqual(
            h.samples,
            [
                StatsSample(
                    time: 2, requestsPerSecond: 4, requestLatencyMs: 7.8125, writesPerSecond: 2, commitLatencyMs: 7.8125
                )
            ])
        for t in 3...5 { h.sample(now: Double(t)) }
        XCTAssertEqual(h.samples.map(\.time), [3, 4, 5], "ring buffer keeps the newest, oldest first")
        XCTAssertNil(h.samples[0].requestLatencyMs, "no requests: no latency")
    }
}
