// The group commit's in-memory view of the keys a batch reads: the rows
// fetched at the start of the transaction (after the counter lock, so they
// include every earlier commit of every daemon) plus the effects of the
// batch's earlier writes. The shared MutationEvaluator runs against it; the
// writer then writes the final state of each changed key in a few set-based
// statements.

import KVEngine

final class PGBatchOverlay: WriteTarget {
    struct Entry {
        var value: KVValue
        var versionstamp: Versionstamp
        var expiresAtMs: Int64?
    }

    /// Rows as fetched (live at the batch's nowMs).
    private var fetched: [Bytes: Entry]
    private var fetchedKeys: Set<Bytes>
    /// Final state of keys changed by the batch's committed writes (nil = deleted), in first-change order.
    private(set) var changes: [Bytes: Entry?] = [:]
    private(set) var changeOrder: [Bytes] = []
    private(set) var enqueues: [Enqueue] = []
    /// The write being evaluated.
    private var scratch: [Bytes: Entry?] = [:]
    private var scratchOrder: [Bytes] = []
    private var scratchEnqueues: [Enqueue] = []

    init(fetchedKeys: Set<Bytes>, rows: [Bytes: Entry]) {
        self.fetchedKeys = fetchedKeys
        fetched = rows
    }

    private func lookup(_ key: Bytes, nowMs: Int64) throws -> Entry? {
        let e: Entry?
        if let s = scratch[key] {
            e = s
        } else if let c = changes[key] {
            e = c
        } else {
            guard fetchedKeys.contains(key) else {
                throw KVError.internalError("group commit read a key it did not fetch")
            }
            e = fetched[key]
        }
        guard let e else { return nil }
        if let exp = e.expiresAtMs, exp <= nowMs { return nil }
        return e
    }

    func currentVersionstamp(_ key: Bytes, nowMs: Int64) throws -> Versionstamp? {
        try lookup(key, nowMs: nowMs)?.versionstamp
    }

    func currentValue(_ key: Bytes, nowMs: Int64) throws -> KVValue? {
        try lookup(key, nowMs: nowMs)?.value
    }

    func put(_ key: Bytes, _ value: KVValue, versionstamp: Versionstamp, expireAtMs: Int64?) throws {
        if scratch.updateValue(Entry(value: value, versionstamp: versionstamp, expiresAtMs: expireAtMs), forKey: key)
            == nil
        {
            scratchOrder.append(key)
        }
    }

    func delete(_ key: Bytes) throws {
        if scratch.updateValue(nil, forKey: key) == nil { scratchOrder.append(key) }
    }

    func enqueue(_ e: Enqueue) throws {
        scratchEnqueues.append(e)
    }

    /// The current write committed: its effects become visible to the next.
    func keepWrite() {
        for k in scratchOrder {
            if changes.updateValue(scratch[k]!, forKey: k) == nil { changeOrder.append(k) }
        }
        enqueues += scratchEnqueues
        discardWrite()
    }

    /// The current write failed: nothing of it stays.
    func discardWrite() {
        scratch.removeAll(keepingCapacity: true)
        scratchOrder.removeAll(keepingCapacity: true)
        scratchEnqueues.removeAll(keepingCapacity: true)
    }
}
