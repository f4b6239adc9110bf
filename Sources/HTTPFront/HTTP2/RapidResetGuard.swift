/// HTTP/2 rapid reset (CVE-2023-44487): a client resetting streams before
/// they are answered costs the handler's work without holding a stream slot.
/// A token bucket of `burst` resets, refilled at `perSecond`; once empty the
/// connection is closed with ENHANCE_YOUR_CALM. Resets of answered streams
/// (a cancelled watch) are not counted: their work is done.
struct RapidResetGuard {
    let burst: Int
    let perSecond: Int
    private var tokens: Double
    private var refilledMs: UInt64

    init(burst: Int, perSecond: Int, nowMs: UInt64) {
        self.burst = burst
        self.perSecond = perSecond
        tokens = Double(burst)
        refilledMs = nowMs
    }

    /// One early reset at `nowMs`: true while within the budget.
    mutating func allowReset(nowMs: UInt64) -> Bool {
        let cap = Double(max(1, burst))
        tokens = min(cap, tokens + Double(nowMs &- refilledMs) * Double(perSecond) / 1000)
        refilledMs = nowMs
        if tokens >= 1 {
            tokens -= 1
            return true
        }
        return false
    }
}
