import Foundation
import Synchronization
import Threading
import XCTest
@testable import KVPostgres
import KVEngine

/// Each test gets its own PostgreSQL schema (a fresh database as far as the
/// store is concerned), dropped afterwards.
class PGTestCase: XCTestCase {
    var url: String!
    var schema: String!
    var stores: [PostgresStore] = []

    override func setUpWithError() throws {
        url = try PGTestCluster.url()
        schema = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
    }

    override func tearDown() {
        for s in stores { s.close() }
        stores = []
        if let url, let schema, let c = try? PGConnection(conninfo: url, searchPath: "public") {
            try? c.execScript("DROP SCHEMA IF EXISTS \(schema) CASCADE")
        }
    }

    var options: PostgresOptions { PostgresOptions(schema: schema) }

    /// Opens a store on this test's schema: each one stands for a daemon.
    func open(_ configure: (inout PostgresOptions) -> Void = { _ in }) throws -> PostgresStore {
        var o = options
        configure(&o)
        let s = try PostgresStore(url: url, options: o)
        stores.append(s)
        return s
    }

    /// A direct connection to the test schema, for checks and fault injection.
    func admin() throws -> PGConnection { try PGConnection(conninfo: url, searchPath: schema) }
}

/// A result another thread hands over; the test waits for it (bounded).
final class Box<T: Sendable>: Sendable {
    private let box = ResultBox<T>()
    func set(_ v: T) { box.set(v) }
    func wait(seconds: Double = 30) -> T? { box.wait(timeoutMs: Int64(seconds * 1000)) }
}

/// A value several threads update.
final class Locked<T: Sendable>: Sendable {
    private let m: Mutex<T>
    init(_ v: T) { m = Mutex(v) }
    func with<R: Sendable>(_ f: (inout T) -> R) -> R { m.withLock { f(&$0) } }
    var value: T { with { $0 } }
}

func k(_ s: String) -> Bytes { Array(s.utf8) }
func bytesValue(_ s: String) -> KVValue { KVValue(data: Array(s.utf8), encoding: .bytes) }
func u64(_ x: UInt64) -> KVValue {
    KVValue(data: (0..<8).map { UInt8(truncatingIfNeeded: x >> (8 * UInt64($0))) }, encoding: .le64)
}
func readU64(_ v: KVValue?) -> UInt64? {
    guard let v, v.encoding == .le64, v.data.count == 8 else { return nil }
    return (0..<8).reduce(UInt64(0)) { $0 | UInt64(v.data[$1]) << (8 * UInt64($1)) }
}
func set(_ key: String, _ value: KVValue, expireAtMs: Int64? = nil) -> Mutation {
    Mutation(key: k(key), kind: .set(value), expireAtMs: expireAtMs)
}
func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

extension KVStorage {
    func sync(_ w: AtomicWrite, seconds: Double = 60) throws -> AtomicWriteResult {
        let box = Box<Result<AtomicWriteResult, KVError>>()
        atomicWrite(w) { box.set($0) }
        guard let r = box.wait(seconds: seconds) else { throw KVError.internalError("write timed out") }
        return try r.get()
    }

    @discardableResult
    func commit(_ mutations: [Mutation], checks: [Check] = []) throws -> Versionstamp {
        let r = try sync(AtomicWrite(checks: checks, mutations: mutations))
        guard case .committed(let vs) = r else {
            XCTFail("expected commit, got \(r)")
            return []
        }
        return vs
    }

    func get(_ key: String, nowMs: Int64? = nil) throws -> KVEntry? {
        try readKeys([k(key)], nowMs: nowMs)[0]
    }

    func lease(visibilityMs: Int64 = 30_000, waitMs: Int64 = 0) throws -> QueueMessage? {
        let box = Box<Result<QueueMessage?, KVError>>()
        leaseQueueMessage(visibilityMs: visibilityMs, waitMs: waitMs) { box.set($0) }
        return try box.wait()!.get()
    }

    func ack(_ m: QueueMessage) throws -> QueueSettleResult {
        let box = Box<Result<QueueSettleResult, KVError>>()
        ackQueueMessage(id: m.id, leaseSeq: m.leaseSeq) { box.set($0) }
        return try box.wait()!.get()
    }

    func fail(_ m: QueueMessage) throws -> QueueSettleResult {
        let box = Box<Result<QueueSettleResult, KVError>>()
        failQueueMessage(id: m.id, leaseSeq: m.leaseSeq) { box.set($0) }
        return try box.wait()!.get()
    }

    func enqueue(_ payload: Bytes = [1], deadlineMs: Int64 = 0, keys: [Bytes] = [], backoff: [UInt32] = []) throws {
        let r = try sync(
            AtomicWrite(enqueues: [
                Enqueue(
                    payload: payload, deadlineMs: deadlineMs,
                    keysIfUndelivered: keys, backoffSchedule: backoff)
            ]))
        guard case .committed = r else { return XCTFail("enqueue not committed: \(r)") }
    }
}
