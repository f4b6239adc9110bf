import Threading
import Synchronization

/// One counted connection. Released by whoever closes the socket.
final class ConnectionSlot: Sendable {
    private weak let limiter: ConnectionLimiter?
    private let ip: ClientIP
    private let released = Mutex(false)
    /// Monotonic ms when the socket was accepted (start of the first request's timeout).
    let acceptedMs = UInt64(MonotonicClock.nowMs())

    init(limiter: ConnectionLimiter, ip: ClientIP) {
        self.limiter = limiter
        self.ip = ip
    }

    func release() {
        let first = released.withLock { released -> Bool in
            if released { return false }
            released = true
            return true
        }
        if first { limiter?.release(ip) }
    }

    deinit { release() }
}
