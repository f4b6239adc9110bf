import Foundation
import Threading
import XCTest
@testable import KVEngine
@testable import KVPostgres
@testable import KVSQLite

/// The backend the engine suite runs on: SQLite by default; PostgreSQL with
/// KVCONNECTD_TEST_BACKEND=postgres (and KVCONNECTD_TEST_PG_URL). `make test`
/// runs the suite once per backend.
enum TestBackend {
    case sqlite, postgres

    static let current: TestBackend =
        ProcessInfo.processInfo.environment["KVCONNECTD_TEST_BACKEND"] == "postgres" ? .postgres : .sqlite

    static func pgURL() throws -> String {
        guard let u = ProcessInfo.processInfo.environment["KVCONNECTD_TEST_PG_URL"], !u.isEmpty else {
            throw XCTSkip("KVCONNECTD_TEST_BACKEND=postgres needs KVCONNECTD_TEST_PG_URL")
        }
        return u
    }
}

/// A fresh database file in a temp directory, removed afterwards.
final class TempDB {
    let dir: URL
    var path: String { dir.appendingPathComponent("kv.sqlite3").path }

    init() {
        dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("kvengine-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    /// PostgreSQL: this database's own schema.
    let pgSchema = "e_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()

    func open(_ options: SQLiteStoreOptions = SQLiteStoreOptions()) throws -> SQLiteStore {
        try SQLiteStore(path: path, options: options)
    }

    /// A store on the backend under test (same database on every call).
    func openStore(_ options: SQLiteStoreOptions = SQLiteStoreOptions()) throws -> any KVStorage {
        switch TestBackend.current {
        case .sqlite:
            return try open(options)
        case .postgres:
            return try PostgresStore(
                url: try TestBackend.pgURL(),
                options: PostgresOptions(
                    schema: pgSchema, readConnections: options.readConnections, maxBatchSize: options.maxBatchSize,
                    queueMaxLeases: options.queueMaxLeases))
        }
    }

    deinit {
        try? FileManager.default.removeItem(at: dir)
        if TestBackend.current == .postgres, let url = try? TestBackend.pgURL(),
            let c = try? PGConnection(conninfo: url, searchPath: "public")
        {
            try? c.execScript("DROP SCHEMA IF EXISTS \(pgSchema) CASCADE")
        }
    }
}

class KVTestCase: XCTestCase {
    var tmp: TempDB!
    var store: (any KVStorage)!

    override func setUpWithError() throws {
        tmp = TempDB()
        store = try tmp.openStore()
    }

    /// The store as SQLite, for tests of SQLite-only behaviour (after `requireSQLite`).
    var sqlite: SQLiteStore { store as! SQLiteStore }

    func requireSQLite(_ why: String = "SQLite-specific") throws {
        if TestBackend.current != .sqlite { throw XCTSkip(why) }
    }

    /// Group-commit transactions committed so far.
    var batchesCommitted: Int {
        switch store {
        case let s as SQLiteStore: return s.core.batchesCommitted
        case let s as PostgresStore: return s.batchesCommitted
        default: return 0
        }
    }

    override func tearDown() {
        store?.close()
        store = nil
        tmp = nil
    }

    func reopen(_ options: SQLiteStoreOptions = SQLiteStoreOptions()) throws {
        store.close()
        store = try tmp.openStore(options)
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

extension KVStorage {
    /// Blocking write (not from a completion handler).
    func atomicWriteSync(_ write: AtomicWrite) throws -> AtomicWriteResult {
        if let s = self as? SQLiteStore { return try s.atomicWriteSync(write) }
        let box = ResultBox<Result<AtomicWriteResult, KVError>>()
        atomicWrite(write) { box.set($0) }
        return try box.wait().get()
    }

    @discardableResult
    func stopQueueDelivery() -> Bool { stopQueueDelivery(drainTimeoutMs: 5000) }

    func queuedMessageCount() throws -> Int {
        let c = try queueCounts()
        return c.ready + c.inflight
    }

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
