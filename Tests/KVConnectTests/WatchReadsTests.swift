import Foundation
import XCTest
@testable import KVConnect
import KVEngine

/// Shared snapshot reads of watch sessions (WatchReads): one read serves
/// every session woken before it started; reads of one key list never
/// overlap, so no session gets an older snapshot after a newer one.
private let queue = DispatchQueue(label: "test.watch-reads", attributes: .concurrent)

final class WatchReadsTests: XCTestCase {
    /// A fake store: each read returns the current "version" as the value
    /// and counts itself; a read takes `delayMs`.
    final class FakeReads: @unchecked Sendable {
        private let lock = NSLock()
        private var _version: UInt8 = 0
        private var _reads = 0
        private var _inFlight = 0
        private var _maxInFlight = 0
        let delayMs: UInt32
        init(delayMs: UInt32) { self.delayMs = delayMs }
        var reads: Int { lock.withLock { _reads } }
        var maxInFlight: Int { lock.withLock { _maxInFlight } }
        func bump() { lock.withLock { _version += 1 } }
        func read(_ keys: [Bytes]) -> [KVEntry?] {
            lock.withLock {
                _reads += 1
                _inFlight += 1
                _maxInFlight = max(_maxInFlight, _inFlight)
            }
            let v = lock.withLock { _version }  // the snapshot is taken here
            usleep(delayMs * 1000)
            lock.withLock { _inFlight -= 1 }
            return keys.map {
                KVEntry(
                    key: $0, value: KVValue(data: [v], encoding: .bytes), versionstamp: Array(repeating: v, count: 10))
            }
        }
    }

    func testSessionsWokenTogetherShareOneRead() {
        let fake = FakeReads(delayMs: 200)
        let reads = WatchReads { fake.read($0) }
        fake.bump()
        let stamps = (0..<1000).map { _ in reads.stamp() }  // 1000 sessions woken by one commit
        let got = LockedValues()
        let all = expectation(description: "all delivered")
        all.expectedFulfillmentCount = 1000
        DispatchQueue.concurrentPerform(iterations: 1000) { i in
            reads.read([[1, 2, 3]], since: stamps[i], queue: queue) { result in
                got.add(try! result.get()[0]!.value.data[0])
                all.fulfill()
            }
        }
        wait(for: [all], timeout: 10)
        XCTAssertEqual(got.values.count, 1000)
        XCTAssertTrue(got.values.allSatisfy { $0 == 1 })
        // The first read starts before every session has asked; the rest
        // share at most one more.
        XCTAssertLessThanOrEqual(fake.reads, 2, "\(fake.reads) reads for 1000 sessions")
        XCTAssertEqual(fake.maxInFlight, 1)
    }

    func testASessionWokenDuringAReadGetsTheNextRead() {
        let fake = FakeReads(delayMs: 100)
        let reads = WatchReads { fake.read($0) }
        let first = expectation(description: "first")
        reads.read([[9]], since: reads.stamp(), queue: queue) { r in
            XCTAssertEqual(try! r.get()[0]!.value.data, [0])
            first.fulfill()
        }
        // Meanwhile a commit changes the key and wakes another session.
        usleep(30_000)
        fake.bump()
        let woken = reads.stamp()
        let second = expectation(description: "second")
        DispatchQueue.global().async {
            reads.read([[9]], since: woken, queue: queue) { r in
                // Not the read in progress (its snapshot predates the commit).
                XCTAssertEqual(try! r.get()[0]!.value.data, [1])
                second.fulfill()
            }
        }
        wait(for: [first, second], timeout: 5)
        XCTAssertEqual(fake.reads, 2)
        XCTAssertEqual(fake.maxInFlight, 1)
    }

    func testDifferentKeysReadSeparatelyAndErrorsReachEveryWaiter() {
        struct Boom: Error {}
        let reads = WatchReads { keys in
            if keys == [[0xff]] { throw Boom() }
            return keys.map { _ in nil }
        }
        let done = expectation(description: "done")
        done.expectedFulfillmentCount = 2
        reads.read([[1]], since: reads.stamp(), queue: queue) { r in
            XCTAssertEqual(try! r.get().count, 1)
            done.fulfill()
        }
        reads.read([[0xff]], since: reads.stamp(), queue: queue) { r in
            if case .success = r { XCTFail("error expected") }
            done.fulfill()
        }
        wait(for: [done], timeout: 5)
    }
}

final class LockedValues: @unchecked Sendable {
    private let lock = NSLock()
    private var _values: [UInt8] = []
    func add(_ v: UInt8) { lock.withLock { _values.append(v) } }
    var values: [UInt8] { lock.withLock { _values } }
}

/// Keep-alive pings from the shared pinger: every stream is pinged, and the
/// total rate stays under `watchPingsPerSecondMax` however many streams.
final class WatchPingRateTests: ServiceTestCase {
    override func configure(_ config: inout ServiceConfiguration) {
        config.watchPingIntervalMs = 160  // ticks of 10 ms, one stream per tick
        config.watchPingsPerSecondMax = 100
    }

    func testPingsAreCappedAndReachEveryStream() throws {
        let token = signer.sign(DataPlaneToken(databaseId: store.databaseId, expiresAtMs: Int64.max))
        var streams: [RecordingStream] = []
        for i in 0..<50 {
            nonisolated(unsafe) var response: ProtocolResponse?
            service.handle(
                ProtocolRequest(
                    method: "POST", path: "/v2/watch", headers: [("authorization", "Bearer \(token)")],
                    body: Wire.watch([stringKey("ping\(i)")]))
            ) { response = $0 }
            let s = RecordingStream()
            try XCTUnwrap(XCTUnwrap(response).stream)(s)
            streams.append(s)
        }
        func pings() -> [Int] { streams.map { s in s.frames.filter { $0 == nil }.count } }
        let start = pings()
        usleep(1_500_000)
        let counts = zip(pings(), start).map { $0 - $1 }
        // Uncapped: 50 streams every 160 ms = ~470 pings in 1.5 s.
        XCTAssertLessThanOrEqual(counts.reduce(0, +), 200, "\(counts)")
        XCTAssertTrue(counts.allSatisfy { $0 >= 1 }, "every stream pinged within 1.5 s: \(counts)")
        for s in streams { s.closeNow() }
    }
}
