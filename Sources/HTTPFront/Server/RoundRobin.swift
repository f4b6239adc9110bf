import Synchronization

/// Connection → event loop assignment (the accept thread asks once per
/// accepted socket).
final class RoundRobin: Sendable {
    private let counter = Atomic<Int>(0)

    func next() -> Int { counter.wrappingAdd(1, ordering: .relaxed).newValue }
}
