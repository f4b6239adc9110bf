// libFuzzer target: AtomicWrite request decoding + validation, then the V8
// scalar decoder on every sum/min/max operand and bound, and (for small
// writes) the engine itself: the write is applied to a SQLiteStore in a temp dir,
// which runs the sum/min/max/versionstamped-key paths against earlier values.
import Foundation
import KVConnect
import KVEngine
import KVSQLite

private let codec = WireCodec()
private let nowMs: Int64 = 1_700_000_000_000

/// One store per process, recreated every `recycleEvery` writes so the file stays small.
private final class StoreBox: @unchecked Sendable {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvconnectd-fuzz-\(getpid())")
    var store: SQLiteStore?
    var writes = 0
    let recycleEvery = 5000

    func get() -> SQLiteStore {
        if let store, writes < recycleEvery { return store }
        store?.close()
        store = nil
        try? FileManager.default.removeItem(at: dir)
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let s = try! SQLiteStore(
            path: dir.appendingPathComponent("fuzz.sqlite3").path,
            options: SQLiteStoreOptions(synchronousFull: false, readConnections: 1))
        store = s
        writes = 0
        return s
    }
}
private let box = StoreBox()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: size > 0 ? data : nil, count: size))
    let write: AtomicWrite
    do {
        write = try codec.decodeAtomicWrite(body, nowMs: nowMs)
    } catch {
        check(error.status == 400 && !error.message.isEmpty)
        return 0
    }
    let l = codec.limits
    check(write.checks.count <= l.maxChecks)
    check(write.mutations.count + write.enqueues.count <= l.maxMutationsAndEnqueues)
    for c in write.checks { check(!c.key.isEmpty && (c.versionstamp == nil || c.versionstamp!.count == 10)) }
    for m in write.mutations {
        check(!m.key.isEmpty && m.key.count <= l.maxWriteKeyBytes)
        switch m.kind {
        case .sum(let v, let lo, let hi, _):
            for b in [v.data, lo ?? [], hi ?? []] { roundTripScalar(b) }
        case .min(let v), .max(let v): roundTripScalar(v.data)
        default: break
        }
    }
    for e in write.enqueues {
        check(e.payload.count <= l.maxValueBytes && e.keysIfUndelivered.count <= l.maxKeysIfUndelivered)
        check(e.backoffSchedule.count <= l.maxBackoffSteps)
    }

    // The engine: small writes only (the fuzzer makes many).
    let total = write.mutations.reduce(0) { $0 + $1.key.count + payload($1.kind) }
    guard total <= 4096 else { return 0 }
    let store = box.get()
    box.writes += 1
    do {
        _ = try store.atomicWriteSync(write)
    } catch KVError.invalidMutation(let text) {
        check(!text.isEmpty)
    } catch {
        fatalError("engine failed on a valid request: \(error)")
    }
    return 0
}

private func payload(_ k: MutationKind) -> Int {
    switch k {
    case .set(let v), .min(let v), .max(let v), .setSuffixVersionstampedKey(let v): return v.data.count
    case .sum(let v, let lo, let hi, _): return v.data.count + (lo?.count ?? 0) + (hi?.count ?? 0)
    case .delete: return 0
    }
}

/// A decodable sum operand re-encodes to something that decodes to the same scalar.
private func roundTripScalar(_ b: Bytes) {
    guard let s = V8Codec.decodeScalar(b) else { return }
    switch (s, V8Codec.decodeScalar(V8Codec.encode(s))) {
    case let (.number(x), .number(y)?): check(x.bitPattern == y.bitPattern)
    case let (.bigint(x), .bigint(y)?): check(x == y)
    default: fatalError("V8Codec.encode(\(s)) does not decode back")
    }
}

/// `precondition` that always says what failed (optimized builds drop its message).
private func check(
    _ ok: @autoclosure () -> Bool, _ what: @autoclosure () -> String = "",
    line: UInt = #line
) {
    if !ok() { fatalError("check failed at line \(line): \(what())") }
}
