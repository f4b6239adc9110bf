import Dispatch
import Foundation
import Synchronization

/// The last `capacity` seconds of activity, sampled once a second from the
/// daemon's counters (the console's graphs).
final class StatsHistory: Sendable {
    let capacity: Int
    private let source: any ConsoleServerStats
    private struct State {
        var ring: [StatsSample] = []
        var next = 0
        var last: (time: Double, c: ServerCounters)?
        var timer: RepeatingTimer?
    }
    private let state = Mutex(State())

    init(source: any ConsoleServerStats, capacity: Int = 300) {
        self.source = source
        self.capacity = capacity
    }

    func start(queue: DispatchQueue = DispatchQueue(label: "kvconsole.stats")) {
        let t = RepeatingTimer(queue: queue, first: .seconds(0), interval: .seconds(1)) { [weak self] in
            self?.sample(now: Date().timeIntervalSince1970)
        }
        state.withLock { $0.timer = t }
    }

    func stop() {
        state.withLock { $0.timer }?.cancel()
    }

    /// Adds the rates since the previous call (the first call only sets the baseline).
    func sample(now: Double) {
        let c = source.counters()
        state.withLock { s in
            if let (t0, p) = s.last, now > t0 {
                let dt = now - t0
                let dReq = max(0, c.requests - p.requests), dBatches = max(0, c.commitBatches - p.commitBatches)
                let sample = StatsSample(
                    time: now, requestsPerSecond: dReq / dt,
                    requestLatencyMs: dReq > 0 ? max(0, c.requestSeconds - p.requestSeconds) / dReq * 1000 : nil,
                    writesPerSecond: max(0, c.writes - p.writes) / dt,
                    commitLatencyMs: dBatches > 0 ? max(0, c.commitSeconds - p.commitSeconds) / dBatches * 1000 : nil)
                if s.ring.count < capacity { s.ring.append(sample) } else { s.ring[s.next] = sample }
                s.next = (s.next + 1) % capacity
            }
            s.last = (now, c)
        }
    }

    /// Oldest first.
    var samples: [StatsSample] {
        state.withLock { s in s.ring.count < capacity ? s.ring : Array(s.ring[s.next...] + s.ring[..<s.next]) }
    }

    var current: ServerCounters { source.counters() }
}
