import Foundation
import XCTest
@testable import KVEngine
@testable import KVSQLite

/// A fresh database file in a temp directory, removed afterwards.
final class TempDB {
    let dir: URL
    var path: String { dir.appendingPathComponent("kv.sqlite3").path }

    init() {
        dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("kvengine-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    func open(_ options: SQLiteStoreOptions = SQLiteStoreOptions()) throws -> SQLiteStore {
        try SQLiteStore(path: path, options: options)
    }

    deinit { try? FileManager.default.removeItem(at: dir) }
}

class KVTestCase: XCTestCase {
    var tmp: TempDB!
    var store: SQLiteStore!

    override func setUpWithError() throws {
        tmp = TempDB()
        store = try tmp.open()
    }

    override func tearDown() {
        store?.close()
        store = nil
        tmp = nil
    }

    func reopen(_ options: SQLiteStoreOptions = SQLiteStoreOptions()) throws {
        store.close()
        store = try tmp.open(options)
    }
}

func k(_ s: String) -> Bytes { Array(s.utf8) }
func bytesValue(_ s: String) -> KVValue { KVValue(data: Array(s.utf8), encoding: .bytes) }
func u64(_ x: UInt64) -> KVValue { WriteEvaluator.le64Value(x) }
func v8num(_ d: Double) -> KVValue { KVValue(data: V8Codec.encode(.number(d)), encoding: .v8) }
func v8big(_ b: BigIntValue) -> KVValue { KVValue(data: V8Codec.encode(.bigint(b)), encoding: .v8) }
func v8big(_ i: Int64) -> KVValue { v8big(BigIntValue(i)) }

func set(_ key: String, _ value: KVValue, expireAtMs: Int64? = nil) -> Mutation {
    Mutation(key: k(key), kind: .set(value), expireAtMs: expireAtMs)
}

func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

extension SQLiteStore {
    func get(_ key: String, nowMs: Int64? = nil) throws -> KVEntry? {
        var end = k(key)
        end.append(0x00)
        return try snapshotRead([ReadRange(start: k(key), end: end, limit: 1)], nowMs: nowMs)[0].first
    }

    @discardableResult
    func commit(_ mutations: [Mutation], checks: [Check] = []) throws -> Versionstamp {
        let r = try atomicWriteSync(AtomicWrite(checks: checks, mutations: mutations))
        guard case .committed(let vs) = r else {
            XCTFail("expected commit, got \(r)")
            return []
        }
        return vs
    }

    func writeError(_ mutations: [Mutation]) -> KVError? {
        do {
            _ = try atomicWriteSync(AtomicWrite(mutations: mutations))
            return nil
        } catch let e as KVError {
            return e
        } catch {
            return .internalError("\(error)")
        }
    }
}
