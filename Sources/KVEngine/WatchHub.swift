import Foundation

/// A registration for changes of a fixed set of keys. `onChange` runs on the
/// thread that committed the change (the writer): it must only schedule work.
public final class KeyWatch: @unchecked Sendable {
    public let keys: [Bytes]
    let onChange: @Sendable () -> Void
    weak var hub: WatchHub?

    public init(keys: [Bytes], onChange: @escaping @Sendable () -> Void) {
        self.keys = keys
        self.onChange = onChange
    }

    /// Stops notifications; idempotent.
    public func cancel() { hub?.remove(self) }
}

/// Commits publish the keys they changed; the hub wakes exactly the watches
/// of those keys. Nothing polls.
public final class WatchHub: @unchecked Sendable {
    public init() {}

    private let lock = NSLock()
    private var byKey: [Bytes: [ObjectIdentifier: KeyWatch]] = [:]
    private var count = 0

    public var watchCount: Int {
        lock.lock(); defer { lock.unlock() }
        return count
    }

    /// Cheap check on the commit path: nothing to collect when nobody watches.
    public var isEmpty: Bool { watchCount == 0 }

    public func add(_ w: KeyWatch) {
        w.hub = self
        lock.lock()
        for k in Set(w.keys) { byKey[k, default: [:]][ObjectIdentifier(w)] = w }
        count += 1
        lock.unlock()
    }

    func remove(_ w: KeyWatch) {
        lock.lock()
        var removed = false
        for k in Set(w.keys) {
            if byKey[k]?.removeValue(forKey: ObjectIdentifier(w)) != nil { removed = true }
            if byKey[k]?.isEmpty == true { byKey[k] = nil }
        }
        if removed { count -= 1 }
        lock.unlock()
    }

    /// Calls each affected watch once, outside the lock.
    public func notify(changed keys: [Bytes]) {
        if keys.isEmpty { return }
        var hit: [ObjectIdentifier: KeyWatch] = [:]
        lock.lock()
        if count > 0 {
            for k in keys {
                if let ws = byKey[k] { hit.merge(ws) { a, _ in a } }
            }
        }
        lock.unlock()
        for w in hit.values { w.onChange() }
    }

    /// Wakes every watch once: for when changes may have been missed (a
    /// lost notification channel). Each watch re-reads and only reports a
    /// real change.
    public func notifyAll() {
        var all: [ObjectIdentifier: KeyWatch] = [:]
        lock.lock()
        for ws in byKey.values { all.merge(ws) { a, _ in a } }
        lock.unlock()
        for w in all.values { w.onChange() }
    }
}
