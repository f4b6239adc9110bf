import Foundation

/// The one wall clock: Unix time in milliseconds, as expiry, deadlines and
/// leases are stored. Components that decide with time take a `WallClock` at
/// construction (`.system` by default) so tests can pass `.fixed(ms)`;
/// `WallClock.nowMs()` is the system time for code that has none injected.
public struct WallClock: Sendable {
    private let read: @Sendable () -> Int64

    public init(_ read: @escaping @Sendable () -> Int64) {
        self.read = read
    }

    /// The system's real-time clock.
    public static let system = WallClock { WallClock.nowMs() }

    /// Always `ms` (tests).
    public static func fixed(_ ms: Int64) -> WallClock { WallClock { ms } }

    public func nowMs() -> Int64 { read() }

    public static func nowMs() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }
}
