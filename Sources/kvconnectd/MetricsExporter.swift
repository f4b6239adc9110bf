import Foundation
import HTTPFront
import KVEngine
import Metrics
import Prometheus
import Synchronization

/// The Prometheus backend of the swift-metrics facade used by the layers,
/// and the `GET /metrics` renderer.
///
/// Pushed metrics (requests, latencies, commit batches) are recorded by the
/// layers through the facade; point-in-time values (connections, watches,
/// queue depth, file size) and engine counters are read when /metrics is
/// scraped. No metric carries a token, key or client-chosen path; the only
/// per-database label is the database id (bounded by the configuration).
enum MetricsBackend {
    /// Bootstraps `MetricsSystem` once per process and returns its registry.
    static func bootstrap() -> PrometheusCollectorRegistry { registry }

    private static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Sub-millisecond (reads from the page cache) to seconds (fsync, a busy disk).
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500),
            .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10)
        ]
        // Group-commit batches hold 1 ... 256 writes.
        factory.valueHistogramBuckets["kvconnectd_commit_batch_size"] = [1, 2, 4, 8, 16, 32, 64, 128, 256]
        MetricsSystem.bootstrap(factory)
        return registry
    }()
}

/// Renders /metrics: refreshes the scrape-time values, then emits the registry.
final class MetricsExporter: Sendable {
    private let registry: PrometheusCollectorRegistry
    private let stores: [any KVStorage]
    /// For the queue gauges' "due" and "age".
    private let clock: WallClock
    /// Engine totals already added to the Prometheus counters, per database.
    private let exported = Mutex<[String: EngineTotals]>([:])
    /// Front totals already added (HTTP/2 stream limit reached, rapid-reset closes).
    private let frontExported = Mutex<(streamLimit: Int, rapidReset: Int)>((0, 0))

    private struct EngineTotals {
        var acknowledged = 0, failedAttempts = 0, deadLettered = 0, expired = 0, poisoned = 0, leasesExpired = 0
    }

    init(registry: PrometheusCollectorRegistry, stores: [any KVStorage], clock: WallClock = .system) {
        self.registry = registry
        self.stores = stores
        self.clock = clock
    }

    func render() -> String {
        exported.withLock { totals in
            refresh(&totals)
            return registry.emitToString()
        }
    }

    private func refresh(_ totals: inout [String: EngineTotals]) {
        let conns = "Open client connections (h1: HTTP/1.1 connections with a request or stream in progress)."
        registry.makeGauge(name: "kvconnectd_open_connections", labels: [("protocol", "h1")], help: conns)
            .set(Double(FrontStats.activeHTTP1Requests))
        registry.makeGauge(name: "kvconnectd_open_connections", labels: [("protocol", "h2")], help: conns)
            .set(Double(FrontStats.openHTTP2Connections))
        frontExported.withLock { last in
            add(
                "kvconnectd_http2_stream_limit_reached_total", [],
                "HTTP/2 connections whose open streams reached http2_max_concurrent_streams (their client queues requests).",
                FrontStats.http2StreamLimitReached, &last.streamLimit)
            add(
                "kvconnectd_http2_rapid_reset_closes_total", [],
                "HTTP/2 connections closed with ENHANCE_YOUR_CALM for resetting too many streams before their response.",
                FrontStats.http2RapidResetCloses, &last.rapidReset)
        }

        for store in stores {
            let db = [("database_id", store.databaseId)]
            gauge("kvconnectd_open_watch_streams", db, "Open watch registrations (one per watch stream).")
                .set(Double(store.watchCount))
            if let stats = try? store.storageStats() {
                // What counts (files, logs, relations) is the backend's: see StorageStats.sizeBytes.
                gauge(
                    "kvconnectd_database_size_bytes", db,
                    "Bytes the database takes on disk, as its backend counts them."
                )
                .set(Double(stats.sizeBytes))
            }
            gauge("kvconnectd_versionstamp_counter", db, "Commit counter behind the latest versionstamp.")
                .set(Double(Versionstamps.counter(of: store.currentVersionstamp) ?? 0))
            let now = clock.nowMs()
            if let q = try? store.queueOverview(nowMs: now) {
                let help = "Queue messages by state (ready: due and waiting; delayed: due later; inflight: leased)."
                gauge("kvconnectd_queue_messages", db + [("state", "ready")], help).set(Double(q.ready))
                gauge("kvconnectd_queue_messages", db + [("state", "delayed")], help).set(Double(q.delayed))
                gauge("kvconnectd_queue_messages", db + [("state", "inflight")], help).set(Double(q.inflight))
                gauge(
                    "kvconnectd_queue_oldest_due_age_seconds", db,
                    "How long the earliest-due waiting message has been due (0 if none is due)."
                )
                .set(Double(max(0, now - (q.oldestDueMs ?? now))) / 1000)
            }

            var last = totals[store.databaseId] ?? EngineTotals()
            let stats = store.queueStats
            let deliveries = "Queue delivery outcomes: ok (acknowledged), failed (attempt failed), dead_lettered."
            add(
                "kvconnectd_queue_deliveries_total", db + [("result", "ok")], deliveries,
                stats.acknowledged, &last.acknowledged)
            add(
                "kvconnectd_queue_deliveries_total", db + [("result", "failed")], deliveries,
                stats.failedAttempts, &last.failedAttempts)
            add(
                "kvconnectd_queue_deliveries_total", db + [("result", "dead_lettered")], deliveries,
                stats.deadLettered, &last.deadLettered)
            add(
                "kvconnectd_queue_poison_messages_total", db,
                "Messages dead-lettered because queue_max_leases leases ended without ack or fail.",
                stats.poisoned, &last.poisoned)
            add(
                "kvconnectd_queue_leases_expired_total", db, "Queue leases that ended without ack or fail.",
                stats.leasesExpired, &last.leasesExpired)
            add(
                "kvconnectd_expired_entries_removed_total", db, "Expired entries deleted by the sweeper.",
                store.expiredEntriesRemoved, &last.expired)
            totals[store.databaseId] = last
        }
    }

    private func gauge(_ name: String, _ labels: [(String, String)], _ help: String) -> Prometheus.Gauge {
        registry.makeGauge(name: name, labels: labels, help: help)
    }

    /// Advances a Prometheus counter to the engine's running total.
    private func add(_ name: String, _ labels: [(String, String)], _ help: String, _ total: Int, _ last: inout Int) {
        let counter = registry.makeCounter(name: name, labels: labels, help: help)
        if total > last { counter.increment(by: Int64(total - last)) }
        last = max(last, total)
    }
}
