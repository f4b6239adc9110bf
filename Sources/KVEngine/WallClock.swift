import Foundation

/// The engine's one clock: Unix time in milliseconds, as expiry, deadlines
/// and leases are stored.
public enum WallClock {
    public static func nowMs() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }
}
