// swift-tools-version: 6.1
// Engine and codec micro-benchmarks (ordo-one/benchmark), kept out of the
// root package so that the daemon and `make test` do not depend on it.
// Run from the repository root with `make bench-micro` (see docs/benchmarks.md).
import PackageDescription

let package = Package(
    name: "kvconnectd-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The root package; named so that products resolve whatever the clone's folder is called.
        .package(name: "kvconnectd", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0")
    ],
    targets: [
        // Request bodies and values shaped like Deno's (Sources/BenchSupport).
        .target(name: "BenchSupport", dependencies: [.product(name: "KVEngine", package: "kvconnectd")]),
        .executableTarget(
            name: "EngineBenchmarks",
            dependencies: [
                "BenchSupport",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "KVEngine", package: "kvconnectd"),
                .product(name: "KVSQLite", package: "kvconnectd"),
                .product(name: "Metrics", package: "swift-metrics")
            ],
            path: "Benchmarks/EngineBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "CodecBenchmarks",
            dependencies: [
                "BenchSupport",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "KVEngine", package: "kvconnectd"),
                .product(name: "KVConnect", package: "kvconnectd")
            ],
            path: "Benchmarks/CodecBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
