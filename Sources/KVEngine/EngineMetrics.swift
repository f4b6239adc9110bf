import Dispatch
import Metrics

/// Commit metrics of the writer thread (swift-metrics facade; the executable
/// bootstraps the backend before opening a store). Created on first use;
/// shared by every backend so the metric names have one home.
public enum EngineMetrics {
    static let commitBatchSize = Recorder(label: "kvconnectd_commit_batch_size", aggregate: true)
    static let commitDuration = Metrics.Timer(label: "kvconnectd_commit_duration_seconds")

    public static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// One committed group-commit batch of `writes` writes, begun at `startNs`.
    public static func recordCommit(writes: Int, startNs: UInt64) {
        commitBatchSize.record(writes)
        commitDuration.recordNanoseconds(Int64(clamping: now() &- startNs))
    }
}
