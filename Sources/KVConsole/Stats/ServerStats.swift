// Server numbers for the console's Server tab. The daemon injects where they
// come from (its own metrics: nothing is counted twice); the console keeps a
// ring buffer of per-second rates for the chart.

import Foundation

/// Running totals and live counts as the daemon measures them.
public struct ServerCounters: Sendable, Equatable {
    public var requests: Double = 0
    public var requestSeconds: Double = 0
    /// Writes committed and group-commit batches, with the batches' total time.
    public var writes: Double = 0
    public var commitBatches: Double = 0
    public var commitSeconds: Double = 0
    public var openConnections: Int = 0
    public var openStreams: Int = 0
    public init() {}
}

public protocol ConsoleServerStats: Sendable {
    func counters() -> ServerCounters
}

/// One second of activity.
struct StatsSample: Sendable, Equatable {
    var time: Double
    var requestsPerSecond: Double
    var requestLatencyMs: Double?
    var writesPerSecond: Double
    var commitLatencyMs: Double?
}
