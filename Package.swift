// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "kvconnectd",
    products: [
        .executable(name: "kvconnectd", targets: ["kvconnectd"]),
        // For the nested Benchmarks/ package (`make bench-micro`), which can only use products.
        .library(name: "KVEngine", targets: ["KVEngine"]),
        .library(name: "KVSQLite", targets: ["KVSQLite"]),
        .library(name: "KVConnect", targets: ["KVConnect"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: [.defaults, "YAML"]),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2")
    ],
    targets: [
        // C layer: system libraries and the committed protobuf-c code.
        .target(
            name: "CMicroHTTPD",
            linkerSettings: [.linkedLibrary("microhttpd")]
        ),
        // Linux calls Glibc's module does not expose (accept4, thread names).
        .target(name: "CLinux"),
        .systemLibrary(name: "CNGHTTP2", pkgConfig: "libnghttp2"),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3"),
        .systemLibrary(name: "CGnuTLS", pkgConfig: "gnutls"),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl"),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq"),
        .target(
            name: "CDatapath",
            cSettings: [.unsafeFlags(["-Wno-everything"])],
            linkerSettings: [.linkedLibrary("protobuf-c")]
        ),

        // Swift layers, bottom up.
        // The one thread type every layer's long-lived threads use.
        .target(name: "Threading", dependencies: ["CLinux"]),
        // Backend-neutral: the storage protocol, engine types, versionstamps,
        // V8 values and sums, mutation evaluation, watch hub.
        .target(
            name: "KVEngine",
            dependencies: [
                "Threading",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics")
            ]
        ),
        // The embedded SQLite backend (the default).
        .target(
            name: "KVSQLite",
            dependencies: [
                "KVEngine", "CSQLite", .product(name: "Logging", package: "swift-log"),
                "Threading",
                .product(name: "Metrics", package: "swift-metrics")
            ]
        ),
        // The PostgreSQL backend (several daemons on one database), on libpq.
        .target(
            name: "KVPostgres",
            dependencies: [
                "KVEngine", "CLibPQ", .product(name: "Logging", package: "swift-log"),
                "Threading",
                .product(name: "Metrics", package: "swift-metrics")
            ]
        ),
        .target(
            name: "KVConnect",
            dependencies: [
                "KVEngine", "CDatapath",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics")
            ]
        ),
        .target(
            name: "KVConsole",
            dependencies: [
                "KVEngine", "KVConnect",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log")
            ],
            resources: [
                .embedInCode("Assets/index.html"), .embedInCode("Assets/console.js"),
                .embedInCode("Assets/console.css"), .embedInCode("Assets/favicon.svg")
            ]
        ),
        .target(
            name: "HTTPFront",
            dependencies: [
                "CMicroHTTPD", "CLinux", "Threading", "CNGHTTP2", "CGnuTLS",
                .product(name: "Logging", package: "swift-log")
            ]
        ),
        .executableTarget(
            name: "kvconnectd",
            dependencies: [
                "KVEngine", "KVSQLite", "KVPostgres", "KVConnect", "KVConsole", "HTTPFront", "CCurl",
                "Threading",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus")
            ]
        ),

        .testTarget(name: "KVEngineTests", dependencies: ["KVEngine", "KVSQLite", "KVPostgres"]),
        .testTarget(
            name: "KVConnectTests",
            dependencies: [
                "KVConnect", "KVEngine", "KVSQLite", "CDatapath",
                .product(name: "MetricsTestKit", package: "swift-metrics")
            ]),
        .testTarget(name: "HTTPFrontTests", dependencies: ["HTTPFront"]),
        .testTarget(name: "KVConsoleTests", dependencies: ["KVConsole", "KVConnect", "KVEngine", "KVSQLite"]),
        .testTarget(name: "KVPostgresTests", dependencies: ["KVPostgres", "KVEngine"]),
        .testTarget(name: "ThreadingTests", dependencies: ["Threading"]),
        .testTarget(
            name: "kvconnectdTests", dependencies: ["kvconnectd", "HTTPFront", "KVConnect", "KVEngine", "KVSQLite"])
    ]
)

// libFuzzer targets (Tests/Fuzz, `make fuzz`). Only in the manifest when
// KVCONNECTD_FUZZ=1, which Tests/Fuzz/run.sh sets together with its own
// scratch path (.build-fuzz): a plain `swift build` / `swift test` never sees
// them. The code under test (KVEngine, KVConnect) is instrumented for
// coverage and ASan and optimized; dependencies are built as usual.
if Context.environment["KVCONNECTD_FUZZ"] == "1" {
    let flags: [String] = ["-sanitize=fuzzer,address", "-O"]
    for target in package.targets where ["KVEngine", "KVSQLite", "KVConnect"].contains(target.name) {
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(flags)]
    }
    let fuzzers: [(name: String, deps: [Target.Dependency])] = [
        ("fuzz-snapshot-read", ["KVConnect", "KVEngine", "KVSQLite", "CDatapath"]),
        ("fuzz-atomic-write", ["KVConnect", "KVEngine", "KVSQLite"]),
        ("fuzz-watch", ["KVConnect", "KVEngine", "KVSQLite", "CDatapath"]),
        ("fuzz-metadata-json", ["KVConnect"]),
        ("fuzz-v8", ["KVEngine"]),
        ("fuzz-key", ["KVEngine"])
    ]
    package.targets.append(.target(name: "CFuzzDriver", path: "Tests/Fuzz/targets/CFuzzDriver"))
    for f in fuzzers {
        package.targets.append(
            .executableTarget(
                name: f.name, dependencies: f.deps + ["CFuzzDriver"], path: "Tests/Fuzz/targets/\(f.name)",
                swiftSettings: [.unsafeFlags(flags)],
                linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address"])]
            ))
    }
}
