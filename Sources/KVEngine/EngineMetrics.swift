import Dispatch
import Metrics

/// Commit metrics of the writer thread (swift-metrics facade; the executable
/// bootstraps the backend before opening a store). Created on first use;
/// shared by every backend so the metric names have one home.
public enum EngineMetrics {
    static let commitBatchSize = Recorder(label: "kvconnectd_commit_batch_size", aggregate: true)
    static let commitDuration = Metrics.Timer(label: "kvconnectd_commit_duration_seconds")

    static let queueDeliveryLag = Metrics.Timer(label: "kvconnectd_queue_delivery_lag_seconds")

    public static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// A queue message handed to a consumer `lagMs` after it became due
    /// (deadline → claim; webhook push and pull alike).
    public static func recordQueueDelivery(lagMs: Int64) {
        queueDeliveryLag.recordMilliseconds(max(0, lagMs))
    }

    /// One committed group-commit batch of `writes` writes, begun at `startNs`.
    public static func recordCommit(writes: Int, startNs: UInt64) {
        commitBatchSize.record(writes)
        commitDuration.recordNanoseconds(Int64(clamping: now() &- startNs))
    }
}
