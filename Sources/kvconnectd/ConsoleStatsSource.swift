import Foundation
import HTTPFront
import KVConsole

/// The console's server numbers, read from what the daemon already measures:
/// the totals of its own /metrics exposition (requests, commits, their
/// latency sums, open connections) and the front's live stream count.
struct ConsoleStatsSource: ConsoleServerStats {
    let render: @Sendable () -> String

    func counters() -> ServerCounters {
        var c = Self.parse(render())
        c.openStreams = FrontStats.openResponseStreams
        return c
    }

    /// Sums the series of the metrics the console charts.
    static func parse(_ text: String) -> ServerCounters {
        var c = ServerCounters()
        var open = 0.0
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                continue
            }
            let series = line[..<space]
            let name = series.firstIndex(of: "{").map { series[..<$0] } ?? series
            switch name {
            case "kvconnectd_requests_total": c.requests += value
            case "kvconnectd_request_duration_seconds_sum": c.requestSeconds += value
            case "kvconnectd_commit_batch_size_sum": c.writes += value
            case "kvconnectd_commit_duration_seconds_count": c.commitBatches += value
            case "kvconnectd_commit_duration_seconds_sum": c.commitSeconds += value
            case "kvconnectd_open_connections": open += value
            default: break
            }
        }
        c.openConnections = Int(open)
        return c
    }
}

/// The daemon's version, shown by `--version` and the console.
enum BuildInfo {
    static let version = "0.1.0"
}
