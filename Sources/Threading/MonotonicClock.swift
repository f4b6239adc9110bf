import Glibc

/// Milliseconds of CLOCK_MONOTONIC: for bounding a wait, which a wall-clock
/// step must not stretch or cut short.
public enum MonotonicClock {
    public static func nowMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// `nowMs() + timeoutMs`, saturating: a huge timeout means no limit.
    public static func deadlineMs(after timeoutMs: Int64) -> Int64 {
        let (sum, overflow) = nowMs().addingReportingOverflow(max(0, timeoutMs))
        return overflow ? Int64.max : sum
    }
}
