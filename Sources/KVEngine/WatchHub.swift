import Synchronization

/// A registration for changes of a fixed set of keys. `onChange` runs on the
/// thread that committed the change (the writer): it must only schedule work.
public final class KeyWatch: Sendable {
    public let keys: [Bytes]
    let onChange: @Sendable () -> Void
    private struct Registration { weak var hub: WatchHub? }
    private let registration = Mutex(Registration())

    public init(keys: [Bytes], onChange: @escaping @Sendable () -> Void) {
        self.keys = keys
        self.onChange = onChange
    }

    fileprivate func register(with hub: WatchHub) { registration.withLock { $0.hub = hub } }

    /// Stops notifications; idempotent.
    public func cancel() { registration.withLock { $0.hub }?.remove(self) }
}

/// Commits publish the keys they changed; the hub wakes exactly the watches
/// of those keys. Nothing polls.
public final class WatchHub: Sendable {
    public init() {}

    private struct State {
        var byKey: [Bytes: [ObjectIdentifier: KeyWatch]] = [:]
        var count = 0
    }
    private let state = Mutex(State())

    public var watchCount: Int { state.withLock { $0.count } }

    /// Cheap check on the commit path: nothing to collect when nobody watches.
    public var isEmpty: Bool { watchCount == 0 }

    public func add(_ w: KeyWatch) {
        w.register(with: self)
        state.withLock { s in
            for k in Set(w.keys) { s.byKey[k, default: [:]][ObjectIdentifier(w)] = w }
            s.count += 1
        }
    }

    func remove(_ w: KeyWatch) {
        state.withLock { s in
            var removed = false
            for k in Set(w.keys) {
                if s.byKey[k]?.removeValue(forKey: ObjectIdentifier(w)) != nil { removed = true }
                if s.byKey[k]?.isEmpty == true { s.byKey[k] = nil }
            }
            if removed { s.count -= 1 }
        }
    }

    /// Calls each affected watch once, outside the lock.
    public func notify(changed keys: [Bytes]) {
        if keys.isEmpty { return }
        let hit: [ObjectIdentifier: KeyWatch] = state.withLock { s in
            var hit: [ObjectIdentifier: KeyWatch] = [:]
            guard s.count > 0 else { return hit }
            for k in keys {
                if let ws = s.byKey[k] { hit.merge(ws) { a, _ in a } }
            }
            return hit
        }
        for w in hit.values { w.onChange() }
    }

    /// Wakes every watch once: for when changes may have been missed (a
    /// lost notification channel). Each watch re-reads and only reports a
    /// real change.
    public func notifyAll() {
        let all: [ObjectIdentifier: KeyWatch] = state.withLock { s in
            var all: [ObjectIdentifier: KeyWatch] = [:]
            for ws in s.byKey.values { all.merge(ws) { a, _ in a } }
            return all
        }
        for w in all.values { w.onChange() }
    }
}
