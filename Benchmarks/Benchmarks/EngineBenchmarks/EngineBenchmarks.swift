// SQLiteStore below the HTTP layer: the durable commit path (synchronous=FULL,
// the default, on a real file system) and snapshot reads. Every store lives
// in a fresh directory under $KVBENCH_DIR (default: the system temp dir) and
// is deleted afterwards. Inputs are built before `startMeasurement()`, so the
// numbers (and malloc counts, which include the writer thread's) are the
// engine's own.

import Benchmark
import BenchSupport
import Foundation
import KVEngine
import KVSQLite
import Metrics

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        warmupIterations: 10,
        maxDuration: .seconds(5),
        maxIterations: 100_000,
        // For `baseline check`: any extra malloc per operation at the median is a
        // regression; time only beyond 25 % at the median (this machine is noisy).
        thresholds: [
            .mallocCountTotal: .init(relative: [.p50: 0.0]),
            .wallClock: .init(relative: BenchmarkThresholds.Relative.relaxed),
            .throughput: .init(relative: BenchmarkThresholds.Relative.relaxed)
        ]
    )
    let stats = CommitStats.shared
    let value = v8StringValue(totalBytes: 100)

    // MARK: commit path

    let seq = StoreFixture("commit-seq")
    Benchmark(
        "Commit 1 key (100 B), sequential",
        configuration: .init(maxIterations: 5_000, setup: { try seq.open() }, teardown: { seq.close() })
    ) { benchmark in
        let write = AtomicWrite(mutations: [Mutation(key: tupleKey("seq", seq.takeKeyIndex()), kind: .set(value))])
        benchmark.startMeasurement()
        let result = try! seq.store.atomicWriteSync(write)
        benchmark.stopMeasurement()
        guard case .committed = result else { fatalError("write not committed: \(result)") }
    }

    // A closed loop of 64 writers, as 64 connections each waiting for its
    // reply: each completion submits that writer's next write (the server's
    // I/O threads never block on a write either). One iteration = 1000
    // writes, so throughput is writes/s and the other metrics are per write.
    let conc = StoreFixture("commit-64")
    let writers = 64
    let perIteration = 1000
    Benchmark(
        "Commit 1 key (100 B), 64 concurrent writers",
        configuration: .init(
            metrics: Benchmark.defaultConfiguration.metrics + [CommitStats.writesPerCommit],
            warmupIterations: 2, scalingFactor: .kilo, maxIterations: 1_000,
            thresholds: (Benchmark.defaultConfiguration.thresholds ?? [:]).merging(
                [CommitStats.writesPerCommit: .init(relative: BenchmarkThresholds.Relative.relaxed)]
            ) { $1 },
            setup: { try conc.open() }, teardown: { conc.close() })
    ) { benchmark in
        let base = conc.takeKeyIndex(count: perIteration)
        let writes = (0..<perIteration).map {
            AtomicWrite(mutations: [Mutation(key: tupleKey("conc", base + $0), kind: .set(value))])
        }
        let batchesBefore = stats.batches
        benchmark.startMeasurement()
        ClosedLoop(store: conc.store, writes: writes).run(inFlight: writers)
        benchmark.stopMeasurement()
        let batches = stats.batches - batchesBefore
        benchmark.measurement(CommitStats.writesPerCommit, batches > 0 ? perIteration / batches : 0)
    }

    let bulk = StoreFixture("commit-1000")
    Benchmark(
        "Commit 1000 keys (100 B) in one write",
        configuration: .init(
            warmupIterations: 2, maxIterations: 2_000,
            setup: { try bulk.open() }, teardown: { bulk.close() })
    ) { benchmark in
        let base = bulk.takeKeyIndex(count: 1000)
        let write = AtomicWrite(
            mutations: (0..<1000).map {
                Mutation(key: tupleKey("bulk", base + $0), kind: .set(value))
            })
        benchmark.startMeasurement()
        let result = try! bulk.store.atomicWriteSync(write)
        benchmark.stopMeasurement()
        guard case .committed = result else { fatalError("write not committed: \(result)") }
    }

    // MARK: snapshot reads (10 000 keys with 100-byte values)

    let keyCount = 10_000
    let reads = StoreFixture("read")
    let openReads: @Sendable () async throws -> Void = {
        try reads.open(preload: keyCount, prefix: "read", value: value)
        // kv.get(key): [key, key ++ 0x00), limit 1.
        reads.pointReads = (0..<keyCount).map { i in
            let k = tupleKey("read", i)
            return [ReadRange(start: k, end: k + [0x00], limit: 1)]
        }
        // kv.list({ prefix: ["read"], start: key }, { limit: 100 }): up to 0x02 "read" 0x01.
        let end: Bytes = [0x02] + Array("read".utf8) + [0x01]
        reads.rangeReads = (0...(keyCount - 100)).map { [ReadRange(start: tupleKey("read", $0), end: end, limit: 100)] }
    }

    Benchmark(
        "Snapshot read: point read, random key of 10 000",
        configuration: .init(setup: openReads, teardown: { reads.close() })
    ) { benchmark in
        let ranges = reads.pointReads[Int.random(in: 0..<keyCount, using: &reads.rng)]
        benchmark.startMeasurement()
        let result = try! reads.store.snapshotRead(ranges)
        benchmark.stopMeasurement()
        precondition(result[0].count == 1)
        blackHole(result)
    }

    Benchmark(
        "Snapshot read: 100-entry range, random start",
        configuration: .init(setup: openReads, teardown: { reads.close() })
    ) { benchmark in
        let ranges = reads.rangeReads[Int.random(in: 0..<reads.rangeReads.count, using: &reads.rng)]
        benchmark.startMeasurement()
        let result = try! reads.store.snapshotRead(ranges)
        benchmark.stopMeasurement()
        precondition(result[0].count == 100)
        blackHole(result)
    }
}

// MARK: - fixtures

/// One SQLiteStore with default options (synchronous=FULL) in its own fresh directory.
final class StoreFixture: @unchecked Sendable {
    let name: String
    private(set) var store: SQLiteStore!
    private var dir: URL?
    private var nextKey = 0
    var rng = SplitMix64(seed: 0x6B76_636F_6E6E_6563)
    /// Prepared read requests (one `[ReadRange]` per request).
    var pointReads: [[ReadRange]] = []
    var rangeReads: [[ReadRange]] = []

    init(_ name: String) { self.name = name }

    func open(preload: Int = 0, prefix: String = "", value: KVValue? = nil) throws {
        close()
        let env = ProcessInfo.processInfo.environment["KVBENCH_DIR"]
        let base = env.map { URL(fileURLWithPath: $0) } ?? FileManager.default.temporaryDirectory
        let d = base.appendingPathComponent("kvconnectd-bench-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: d)
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        dir = d
        store = try SQLiteStore(path: d.appendingPathComponent("kv.sqlite3").path)
        nextKey = 0
        rng = SplitMix64(seed: 0x6B76_636F_6E6E_6563)
        var i = 0
        while i < preload {
            let n = min(1000, preload - i)
            let write = AtomicWrite(
                mutations: (i..<(i + n)).map { Mutation(key: tupleKey(prefix, $0), kind: .set(value!)) })
            guard case .committed = try store.atomicWriteSync(write) else { fatalError("preload failed") }
            i += n
        }
    }

    /// First of `count` key indexes never written before in this store.
    func takeKeyIndex(count: Int = 1) -> Int {
        defer { nextKey += count }
        return nextKey
    }

    func close() {
        store?.close()
        store = nil
        if let dir { try? FileManager.default.removeItem(at: dir) }
        dir = nil
    }
}

/// Submits `writes` with at most `inFlight` outstanding; returns when all are durable.
final class ClosedLoop: @unchecked Sendable {
    private let store: SQLiteStore
    private let writes: [AtomicWrite]
    private let lock = NSLock()
    private var issued = 0
    private var completed = 0
    private let done = DispatchSemaphore(value: 0)

    init(store: SQLiteStore, writes: [AtomicWrite]) {
        self.store = store
        self.writes = writes
    }

    func run(inFlight: Int) {
        for _ in 0..<min(inFlight, writes.count) { submitNext() }
        done.wait()
    }

    private func submitNext() {
        lock.lock()
        guard issued < writes.count else {
            lock.unlock()
            return
        }
        let write = writes[issued]
        issued += 1
        lock.unlock()
        store.atomicWrite(write) { [self] result in
            guard case .success(.committed) = result else { fatalError("write not committed: \(result)") }
            lock.lock()
            completed += 1
            let finished = completed == writes.count
            lock.unlock()
            if finished { done.signal() } else { submitNext() }
        }
    }
}

/// Counts the engine's group-commit transactions through its
/// `kvconnectd_commit_batch_size` recorder (swift-metrics), to report how
/// many writes shared one fsync.
final class CommitStats: MetricsFactory, RecorderHandler, @unchecked Sendable {
    static let writesPerCommit = BenchmarkMetric.custom(
        "Writes per commit (#)", polarity: .prefersLarger,
        useScalingFactor: false)
    static let shared: CommitStats = {
        let s = CommitStats()
        MetricsSystem.bootstrap(s)
        return s
    }()

    private let lock = NSLock()
    private var _batches = 0
    var batches: Int {
        lock.lock()
        defer { lock.unlock() }
        return _batches
    }

    func record(_ value: Int64) {
        lock.lock()
        _batches += 1
        lock.unlock()
    }

    func record(_ value: Double) { record(Int64(value)) }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> RecorderHandler {
        label == "kvconnectd_commit_batch_size" ? self : NOOPMetricsHandler.instance
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> CounterHandler { NOOPMetricsHandler.instance }
    func makeTimer(label: String, dimensions: [(String, String)]) -> TimerHandler { NOOPMetricsHandler.instance }
    func destroyCounter(_ handler: CounterHandler) {}
    func destroyRecorder(_ handler: RecorderHandler) {}
    func destroyTimer(_ handler: TimerHandler) {}
}
