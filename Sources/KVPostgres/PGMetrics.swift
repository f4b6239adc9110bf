import Metrics

/// What PostgreSQL adds to the engine's commit metrics (EngineMetrics): the
/// transactions run again after a serialization failure or deadlock, and
/// reconnections.
enum PGMetrics {
    static let commitRetries = Counter(label: "kvconnectd_pg_commit_retries_total")
    static let reconnects = Counter(label: "kvconnectd_pg_reconnects_total")

    static func retried() { commitRetries.increment() }
}
