import Dispatch

/// A repeating libdispatch timer that can live in a `Sendable` type.
/// @unchecked Sendable: a dispatch source's methods are thread-safe
/// (libdispatch), the `DispatchSourceTimer` protocol only does not say so.
final class RepeatingTimer: @unchecked Sendable {
    private let source: DispatchSourceTimer

    /// Runs `handler` on `queue` after `first`, then every `interval`, until cancelled.
    init(
        queue: DispatchQueue, first: DispatchTimeInterval, interval: DispatchTimeInterval,
        handler: @escaping @Sendable () -> Void
    ) {
        source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now() + first, repeating: interval)
        source.setEventHandler(handler: handler)
        source.resume()
    }

    func cancel() { source.cancel() }
}
