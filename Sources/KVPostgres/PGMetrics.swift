import Dispatch
import Metrics

/// Commit metrics of the PostgreSQL writer (same names as SQLite mode's, so
/// dashboards work for both), plus the retries PostgreSQL makes necessary.
enum PGMetrics {
    static let commitBatchSize = Recorder(label: "kvconnectd_commit_batch_size", aggregate: true)
    static let commitDuration = Metrics.Timer(label: "kvconnectd_commit_duration_seconds")
    static let commitRetries = Counter(label: "kvconnectd_pg_commit_retries_total")
    static let reconnects = Counter(label: "kvconnectd_pg_reconnects_total")

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    static func recordCommit(writes: Int, startNs: UInt64) {
        commitBatchSize.record(writes)
        commitDuration.recordNanoseconds(Int64(clamping: now() &- startNs))
    }

    static func retried() { commitRetries.increment() }
}
