import CDatapath
import Foundation
import Logging
import MetricsTestKit
import XCTest
@testable import KVConnect
import KVEngine

/// Request metrics (a private TestMetrics factory per service, so nothing is
/// bootstrapped globally), the /metrics route and the per-request log line.
final class MetricsRoutingTests: ServiceTestCase {
    var metrics: TestMetrics!
    var logs: LogCapture!

    override func setUpWithError() throws {
        metrics = TestMetrics()
        logs = LogCapture()
        try super.setUpWithError()
    }

    override func configure(_ config: inout ServiceConfiguration) {
        config.metricsFactory = metrics
    }

    override func makeLogger() -> Logger {
        let capture = logs!
        var logger = Logger(label: "test") { _ in capture.handler() }
        logger.logLevel = .debug
        return logger
    }

    func call(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = [])
        -> ProtocolResponse
    {
        send(method, path, headers: headers, body: body)
    }

    func count(_ endpoint: String, _ status: Int) -> Int64 {
        metrics.counterTotal(
            label: "kvconnectd_requests_total",
            dimensions: [("endpoint", endpoint), ("status", String(status))])
    }

    func testEndpointLabels() {
        let routes = RouteTable(endpointPath: "/v2")
        func label(_ path: String) -> String {
            routes.resolve(method: "POST", path: path).endpoint?.metricLabel ?? Endpoint.unroutedLabel
        }
        XCTAssertEqual(label("/"), "metadata")
        XCTAssertEqual(label("/replica"), "replica_metadata")
        XCTAssertEqual(label("/v2/snapshot_read"), "snapshot_read")
        XCTAssertEqual(label("/v2/replica/snapshot_read"), "replica_snapshot_read")
        XCTAssertEqual(label("/v2/atomic_write"), "atomic_write")
        XCTAssertEqual(label("/v2/replica/atomic_write"), "replica_atomic_write")
        XCTAssertEqual(label("/v2/watch"), "watch")
        XCTAssertEqual(label("/v2/replica/watch"), "replica_watch")
        XCTAssertEqual(label("/v2/queue/lease"), "queue_lease")
        XCTAssertEqual(label("/v2/queue/ack"), "queue_ack")
        XCTAssertEqual(label("/v2/queue/fail"), "queue_fail")
        XCTAssertEqual(label("/admin/queue/stats"), "queue_admin")
        XCTAssertEqual(label("/healthz"), "healthz")
        XCTAssertEqual(label("/readyz"), "readyz")
        XCTAssertEqual(label("/metrics"), "metrics")
        XCTAssertEqual(label("/secret-token-in-path"), "other")
        XCTAssertEqual(label("/v2/snapshot_read/x"), "other")
        XCTAssertEqual(label("/db/v2/snapshot_read"), "other")
    }

    func testCountsRequestsByEndpointAndStatus() throws {
        XCTAssertEqual(call("GET", "/healthz").status, 200)
        XCTAssertEqual(call("GET", "/healthz").status, 200)
        XCTAssertEqual(call("POST", "/").status, 401)
        XCTAssertEqual(call("GET", "/nope/\(accessToken)").status, 404)
        XCTAssertEqual(call("GET", "/v2/snapshot_read").status, 405)

        let meta = call(
            "POST", "/", headers: [("authorization", "Bearer \(accessToken)")],
            body: Array(#"{"supportedVersions":[2,3]}"#.utf8))
        XCTAssertEqual(meta.status, 200)
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(meta.body)) as? [String: Any])
        let token = try XCTUnwrap(o["token"] as? String)
        let h = [
            ("authorization", "Bearer \(token)"), ("x-denokv-database-id", store.databaseId),
            ("content-type", "application/x-protobuf")
        ]
        let w = call(
            "POST", "/v2/atomic_write", headers: h,
            body: Wire.atomicWrite(mutations: [.init(key: stringKey("k"), type: .set, value: [1], encoding: .bytes)]))
        XCTAssertEqual(w.status, 200)
        let r = call(
            "POST", "/v2/snapshot_read", headers: h,
            body: Wire.snapshotRead([(start: stringKey("k"), end: stringKey("k") + [0], limit: 10, reverse: false)]))
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(call("POST", "/v2/snapshot_read", headers: [("authorization", "Bearer forged")]).status, 401)

        XCTAssertEqual(count("healthz", 200), 2)
        XCTAssertEqual(count("metadata", 401), 1)
        XCTAssertEqual(count("metadata", 200), 1)
        XCTAssertEqual(count("other", 404), 1)
        XCTAssertEqual(count("snapshot_read", 405), 1)
        XCTAssertEqual(count("atomic_write", 200), 1)
        XCTAssertEqual(count("snapshot_read", 200), 1)
        XCTAssertEqual(count("snapshot_read", 401), 1)
        XCTAssertEqual(metrics.counterTotal(label: "kvconnectd_requests_total"), 9)
        // No label ever carries a client path or token.
        for c in metrics.counters {
            for (_, v) in c.dimensions {
                XCTAssertFalse(v.contains(accessToken) || v.contains(token) || v.contains("/"), v)
            }
        }
        let timer = try metrics.expectTimer("kvconnectd_request_duration_seconds", [("endpoint", "atomic_write")])
        XCTAssertEqual(timer.values.count, 1)
        XCTAssertGreaterThan(timer.values[0], 0)
        XCTAssertEqual(
            try metrics.expectTimer("kvconnectd_request_duration_seconds", [("endpoint", "healthz")]).values.count, 2)

        // One debug line per request, with a request id, never a token.
        let lines = logs.entries.filter { $0.message == "request" }
        XCTAssertEqual(lines.count, 9)
        XCTAssertEqual(Set(lines.compactMap { $0.metadata["request_id"] }).count, 9)
        let write = try XCTUnwrap(lines.first { $0.metadata["endpoint"] == "atomic_write" })
        XCTAssertEqual(write.level, .debug)
        XCTAssertEqual(write.metadata["status"], "200")
        XCTAssertEqual(write.metadata["method"], "POST")
        XCTAssertEqual(write.metadata["database_id"], store.databaseId)
        XCTAssertNotNil(write.metadata["duration_ms"].flatMap(Double.init))
        let exchange = try XCTUnwrap(
            lines.first { $0.metadata["endpoint"] == "metadata" && $0.metadata["status"] == "200" })
        XCTAssertEqual(exchange.metadata["database_id"], store.databaseId)
        for e in logs.entries {
            let text = e.message + e.metadata.values.joined(separator: " ")
            XCTAssertFalse(text.contains(token), text)
            XCTAssertFalse(text.contains("Bearer"), text)
        }
        XCTAssertNotNil(w.headers.first { $0.name == "x-request-id" })
    }

    /// The replica handle's routes have labels of their own and their paths
    /// are logged (they used to be counted as "other", "(unrouted)").
    func testReplicaRoutesLabelledAndLogged() {
        XCTAssertEqual(call("POST", "/replica").status, 401)
        XCTAssertEqual(call("POST", "/v2/replica/snapshot_read").status, 401)
        XCTAssertEqual(call("GET", "/v2/replica/watch").status, 405)
        XCTAssertEqual(count("replica_metadata", 401), 1)
        XCTAssertEqual(count("replica_snapshot_read", 401), 1)
        XCTAssertEqual(count("replica_watch", 405), 1)
        XCTAssertEqual(count("other", 401), 0)
        let paths = logs.entries.filter { $0.message == "request" }.compactMap { $0.metadata["path"] }
        XCTAssertEqual(paths, ["/replica", "/v2/replica/snapshot_read", "/v2/replica/watch"])
    }

    func testUnroutedPathsAreNotLogged() {
        XCTAssertEqual(call("GET", "/v2/\(accessToken)").status, 404)
        let line = logs.entries.first { $0.message == "request" }
        XCTAssertEqual(line?.metadata["path"], "(unrouted)")
        XCTAssertEqual(line?.metadata["endpoint"], "other")
        XCTAssertNil(line?.metadata["database_id"])
    }

    func testWatchCountedAtStreamStart() throws {
        let meta = call("POST", "/", headers: [("authorization", "Bearer \(accessToken)")])
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(meta.body)) as? [String: Any])
        let token = try XCTUnwrap(o["token"] as? String)
        let r = call(
            "POST", "/v2/watch",
            headers: [("authorization", "Bearer \(token)"), ("content-type", "application/x-protobuf")],
            body: Wire.watch([stringKey("w")]))
        XCTAssertEqual(r.status, 200)
        XCTAssertNotNil(r.stream)
        XCTAssertEqual(count("watch", 200), 1)
    }

    func testMetricsRoute() {
        XCTAssertEqual(call("GET", "/metrics").status, 404)  // no renderer configured
        XCTAssertEqual(count("metrics", 404), 1)
        makeService { $0.metricsText = { "kvconnectd_test_metric 1\n" } }
        let r = call("GET", "/metrics")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "kvconnectd_test_metric 1\n")
        XCTAssertEqual(r.headers.first { $0.name == "content-type" }?.value, "text/plain; version=0.0.4; charset=utf-8")
        XCTAssertEqual(call("POST", "/metrics").status, 405)
        XCTAssertEqual(count("metrics", 200), 1)
        XCTAssertEqual(count("metrics", 405), 1)
    }

    func testServerErrorsLoggedWithContext() {
        store.close()  // every later read fails
        _ = call("GET", "/readyz")
        let e = logs.entries.first { $0.level >= .warning }
        XCTAssertNotNil(e)
        XCTAssertEqual(e?.metadata["endpoint"], "readyz")
        XCTAssertNotNil(e?.metadata["request_id"])
        XCTAssertNotNil(e?.metadata["reason"])
    }
}

/// Collects log records for assertions.
final class LogCapture: @unchecked Sendable {
    struct Entry {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }
    private let lock = NSLock()
    private var _entries: [Entry] = []
    var entries: [Entry] { lock.withLock { _entries } }
    func append(_ e: Entry) { lock.withLock { _entries.append(e) } }
    func handler() -> some LogHandler { Handler(capture: self) }

    struct Handler: LogHandler {
        let capture: LogCapture
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let m = (event.metadata ?? [:]).mapValues { "\($0)" }
            capture.append(Entry(level: event.level, message: event.message.description, metadata: m))
        }
    }
}
