import Synchronization

/// Live-object counters, so tests can check that nothing leaks, and running
/// totals for `FrontStats`.
final class LiveCount: Sendable {
    static let mhdRequests = LiveCount()
    static let http2Connections = LiveCount()
    /// HTTPResponseStream objects alive (freed once the producer lets go after close).
    static let responseStreams = LiveCount()
    /// gnutls sessions alive (handshaking, HTTP/2 over TLS or bridged HTTP/1.1).
    static let tlsSessions = LiveCount()
    /// HTTP/1.1-over-TLS socketpair bridges alive.
    static let tlsBridges = LiveCount()
    /// Running totals (only ever added to): see FrontStats.
    static let http2StreamLimitReached = LiveCount()
    static let http2RapidResetCloses = LiveCount()

    private let count = Atomic<Int>(0)

    func add(_ delta: Int) { count.wrappingAdd(delta, ordering: .sequentiallyConsistent) }
    var value: Int { count.load(ordering: .sequentiallyConsistent) }
}
