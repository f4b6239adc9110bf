// WireCodec (protobuf-c ⇄ engine types) on the bodies of the two hot
// requests, as Deno sends them, and on the replies. One iteration = 1000
// operations (scalingFactor .kilo) unless noted, so throughput is ops/s and
// wall clock and malloc counts are per operation.

import Benchmark
import BenchSupport
import KVConnect
import KVEngine

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 100_000,
        // For `baseline check`: any extra malloc per operation at the median is a
        // regression; time only beyond 25 % at the median (this machine is noisy).
        thresholds: [
            .mallocCountTotal: .init(relative: [.p50: 0.0]),
            .wallClock: .init(relative: BenchmarkThresholds.Relative.relaxed),
            .throughput: .init(relative: BenchmarkThresholds.Relative.relaxed)
        ]
    )
    let codec = WireCodec()
    let nowMs: Int64 = 1_767_225_600_000
    let value = v8StringValue(totalBytes: 100)

    // kv.get(["users", "k00004242"])
    let getBody = snapshotReadBody(getting: tupleKey("users", 4242))
    // kv.set(["users", "k00004242"], "<96 x's>"): one M_SET, 100-byte V8 value.
    let setBody = atomicWriteBody(setting: [(tupleKey("users", 4242), value)])
    // An atomic() with 1000 sets (the largest write the protocol allows).
    let bulkBody = atomicWriteBody(setting: (0..<1000).map { (tupleKey("users", $0), value) })

    // The bodies decode to what they claim to be.
    precondition(
        try! codec.decodeSnapshotRead(getBody) == [
            ReadRange(
                start: tupleKey("users", 4242),
                end: tupleKey("users", 4242) + [0], limit: 1)
        ])
    precondition(
        try! codec.decodeAtomicWrite(setBody, nowMs: nowMs)
            == AtomicWrite(mutations: [Mutation(key: tupleKey("users", 4242), kind: .set(value))]))
    precondition(try! codec.decodeAtomicWrite(bulkBody, nowMs: nowMs).mutations.count == 1000)

    let entry = { (i: Int) in
        KVEntry(key: tupleKey("users", i), value: value, versionstamp: versionstamp(UInt64(i + 1)))
    }
    let oneEntry = [[entry(42)]]
    let hundredEntries = [(0..<100).map(entry)]
    let committed = AtomicWriteResult.committed(versionstamp: versionstamp(123_456))

    Benchmark("Decode SnapshotRead (kv.get, 1 range)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! codec.decodeSnapshotRead(getBody))
        }
    }

    Benchmark("Decode AtomicWrite (kv.set, 1 mutation, 100 B value)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! codec.decodeAtomicWrite(setBody, nowMs: nowMs))
        }
    }

    Benchmark(
        "Decode AtomicWrite (1000 mutations, 100 B values), 1 op per iteration",
        configuration: .init(scalingFactor: .one)
    ) { _ in
        blackHole(try! codec.decodeAtomicWrite(bulkBody, nowMs: nowMs))
    }

    Benchmark("Encode SnapshotReadOutput (1 entry)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(codec.encodeSnapshotReadOutput(oneEntry))
        }
    }

    Benchmark("Encode SnapshotReadOutput (100 entries)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(codec.encodeSnapshotReadOutput(hundredEntries))
        }
    }

    Benchmark("Encode AtomicWriteOutput (committed)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(codec.encodeAtomicWriteOutput(committed))
        }
    }
}
