import Foundation
import HTTPFront
import KVConsole
import Prometheus

/// The console's server numbers, read from what the daemon already measures:
/// the totals the layers push into the metrics registry (requests, commits,
/// their latency sums) and the front's live counts. Sampled every second, so
/// it reads the registry as is: the /metrics renderer's scrape-time refresh
/// (database size, entry count) is too costly for that.
struct ConsoleStatsSource: ConsoleServerStats {
    let registry: PrometheusCollectorRegistry

    func counters() -> ServerCounters {
        var c = Self.parse(registry.emitToString())
        c.openConnections = FrontStats.activeHTTP1Requests + FrontStats.openHTTP2Connections
        c.openStreams = FrontStats.openResponseStreams
        return c
    }

    /// Sums the series of the metrics the console charts.
    static func parse(_ text: String) -> ServerCounters {
        var c = ServerCounters()
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
            default: break
            }
        }
        return c
    }
}
