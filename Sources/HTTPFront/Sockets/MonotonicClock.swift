import Glibc

/// Milliseconds on CLOCK_MONOTONIC: the one clock of the front's timeouts
/// (idle, request, sniff, handshake, rapid-reset refill). Unaffected by
/// changes to the wall clock; meaningful only as differences.
enum MonotonicClock {
    static func nowMs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}
