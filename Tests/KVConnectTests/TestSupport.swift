import CDatapath
import Foundation
import Logging
import XCTest
@testable import KVConnect
import KVEngine
import KVSQLite

/// Builds request bodies with protobuf-c itself, so the tests exercise the
/// same wire format a client sends.
enum Wire {
    static func snapshotRead(_ ranges: [(start: [UInt8], end: [UInt8], limit: Int32, reverse: Bool)]) -> [UInt8] {
        let arena = Arena()
        defer { arena.free() }
        let ptrs = arena.array(of: UnsafeMutablePointer<Com__Deno__Kv__Datapath__ReadRange>?.self, count: ranges.count)
        for (i, r) in ranges.enumerated() {
            let p = arena.object(Com__Deno__Kv__Datapath__ReadRange.self)
            com__deno__kv__datapath__read_range__init(p)
            p.pointee.start = arena.binary(r.start)
            p.pointee.end = arena.binary(r.end)
            p.pointee.limit = r.limit
            p.pointee.reverse = r.reverse ? 1 : 0
            ptrs[i] = p
        }
        var msg = Com__Deno__Kv__Datapath__SnapshotRead()
        com__deno__kv__datapath__snapshot_read__init(&msg)
        msg.n_ranges = ranges.count
        msg.ranges = ptrs
        return pack(
            &msg, com__deno__kv__datapath__snapshot_read__get_packed_size, com__deno__kv__datapath__snapshot_read__pack)
    }

    struct M {
        var key: [UInt8]
        var type: MutationType
        var value: [UInt8]? = nil
        var encoding: ValueEncoding = .v8
        var expireAtMs: Int64 = 0
        /// `sum` bounds and clamping.
        var sumMin: [UInt8] = [], sumMax: [UInt8] = [], sumClamp = false
    }

    static func atomicWrite(
        checks: [(key: [UInt8], vs: [UInt8])] = [], mutations: [M] = [],
        enqueues: [(payload: [UInt8], deadline: Int64, keys: [[UInt8]], backoff: [UInt32])] = []
    ) -> [UInt8] {
        let arena = Arena()
        defer { arena.free() }
        let cps = arena.array(of: UnsafeMutablePointer<Com__Deno__Kv__Datapath__Check>?.self, count: checks.count)
        for (i, c) in checks.enumerated() {
            let p = arena.object(Com__Deno__Kv__Datapath__Check.self)
            com__deno__kv__datapath__check__init(p)
            p.pointee.key = arena.binary(c.key)
            p.pointee.versionstamp = arena.binary(c.vs)
            cps[i] = p
        }
        let mps = arena.array(of: UnsafeMutablePointer<Com__Deno__Kv__Datapath__Mutation>?.self, count: mutations.count)
        for (i, m) in mutations.enumerated() {
            let p = arena.object(Com__Deno__Kv__Datapath__Mutation.self)
            com__deno__kv__datapath__mutation__init(p)
            p.pointee.key = arena.binary(m.key)
            p.pointee.mutation_type = m.type
            p.pointee.expire_at_ms = m.expireAtMs
            p.pointee.sum_min = arena.binary(m.sumMin)
            p.pointee.sum_max = arena.binary(m.sumMax)
            p.pointee.sum_clamp = m.sumClamp ? 1 : 0
            if let v = m.value {
                let kv = arena.object(Com__Deno__Kv__Datapath__KvValue.self)
                com__deno__kv__datapath__kv_value__init(kv)
                kv.pointee.data = arena.binary(v)
                kv.pointee.encoding = m.encoding
                p.pointee.value = kv
            }
            mps[i] = p
        }
        let eps = arena.array(of: UnsafeMutablePointer<Com__Deno__Kv__Datapath__Enqueue>?.self, count: enqueues.count)
        for (i, e) in enqueues.enumerated() {
            let p = arena.object(Com__Deno__Kv__Datapath__Enqueue.self)
            com__deno__kv__datapath__enqueue__init(p)
            p.pointee.payload = arena.binary(e.payload)
            p.pointee.deadline_ms = e.deadline
            let keys = arena.array(of: ProtobufCBinaryData.self, count: e.keys.count)
            for (j, k) in e.keys.enumerated() { keys[j] = arena.binary(k) }
            p.pointee.n_keys_if_undelivered = e.keys.count
            p.pointee.keys_if_undelivered = keys
            let backoff = arena.array(of: UInt32.self, count: e.backoff.count)
            for (j, b) in e.backoff.enumerated() { backoff[j] = b }
            p.pointee.n_backoff_schedule = e.backoff.count
            p.pointee.backoff_schedule = backoff
            eps[i] = p
        }
        var msg = Com__Deno__Kv__Datapath__AtomicWrite()
        com__deno__kv__datapath__atomic_write__init(&msg)
        msg.n_checks = checks.count
        msg.checks = cps
        msg.n_mutations = mutations.count
        msg.mutations = mps
        msg.n_enqueues = enqueues.count
        msg.enqueues = eps
        return pack(
            &msg, com__deno__kv__datapath__atomic_write__get_packed_size, com__deno__kv__datapath__atomic_write__pack)
    }

    static func watch(_ keys: [[UInt8]]) -> [UInt8] {
        let arena = Arena()
        defer { arena.free() }
        let ptrs = arena.array(of: UnsafeMutablePointer<Com__Deno__Kv__Datapath__WatchKey>?.self, count: keys.count)
        for (i, k) in keys.enumerated() {
            let p = arena.object(Com__Deno__Kv__Datapath__WatchKey.self)
            com__deno__kv__datapath__watch_key__init(p)
            p.pointee.key = arena.binary(k)
            ptrs[i] = p
        }
        var m = Com__Deno__Kv__Datapath__Watch()
        com__deno__kv__datapath__watch__init(&m)
        m.n_keys = keys.count
        m.keys = ptrs
        return pack(&m, com__deno__kv__datapath__watch__get_packed_size, com__deno__kv__datapath__watch__pack)
    }

    static func decodeReadOutput(_ body: [UInt8])
        -> (ranges: [[(key: [UInt8], value: [UInt8], vs: [UInt8])]], strong: Bool, status: ReadStatus)?
    {
        guard
            let m = body.withUnsafeBufferPointer({
                com__deno__kv__datapath__snapshot_read_output__unpack(nil, $0.count, $0.baseAddress)
            })
        else { return nil }
        defer { com__deno__kv__datapath__snapshot_read_output__free_unpacked(m, nil) }
        var out: [[(key: [UInt8], value: [UInt8], vs: [UInt8])]] = []
        for i in 0..<m.pointee.n_ranges {
            let r = m.pointee.ranges[i]!.pointee
            var entries: [(key: [UInt8], value: [UInt8], vs: [UInt8])] = []
            for j in 0..<r.n_values {
                let e = r.values[j]!.pointee
                entries.append((bytes(e.key), bytes(e.value), bytes(e.versionstamp)))
            }
            out.append(entries)
        }
        return (out, m.pointee.read_is_strongly_consistent != 0, m.pointee.status)
    }

    static func decodeWriteOutput(_ body: [UInt8]) -> (status: WriteStatus, vs: [UInt8], failed: [UInt32])? {
        guard
            let m = body.withUnsafeBufferPointer({
                com__deno__kv__datapath__atomic_write_output__unpack(nil, $0.count, $0.baseAddress)
            })
        else { return nil }
        defer { com__deno__kv__datapath__atomic_write_output__free_unpacked(m, nil) }
        let failed = (0..<m.pointee.n_failed_checks).map { m.pointee.failed_checks[$0] }
        return (m.pointee.status, bytes(m.pointee.versionstamp), failed)
    }

    static func bytes(_ b: ProtobufCBinaryData) -> [UInt8] {
        guard b.len > 0, let p = b.data else { return [] }
        return Array(UnsafeBufferPointer(start: p, count: b.len))
    }

    typealias MutationType = Com__Deno__Kv__Datapath__MutationType
    typealias ValueEncoding = Com__Deno__Kv__Datapath__ValueEncoding
    typealias ReadStatus = Com__Deno__Kv__Datapath__SnapshotReadStatus
    typealias WriteStatus = Com__Deno__Kv__Datapath__AtomicWriteStatus
}

// The wire enums of proto/datapath.proto under short names, so tests say
// `type: .sum, encoding: .le64` instead of raw numbers.
extension Wire.MutationType {
    static let unspecified = COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_UNSPECIFIED
    static let set = COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_SET
    static let delete = COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_DELETE
    static let sum = COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_SUM
    static let max = COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_MAX
    static let min = COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_MIN
    static let setSuffixVersionstampedKey = COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_SET_SUFFIX_VERSIONSTAMPED_KEY
}

extension Wire.ValueEncoding {
    static let unspecified = COM__DENO__KV__DATAPATH__VALUE_ENCODING__VE_UNSPECIFIED
    static let v8 = COM__DENO__KV__DATAPATH__VALUE_ENCODING__VE_V8
    static let le64 = COM__DENO__KV__DATAPATH__VALUE_ENCODING__VE_LE64
    static let bytes = COM__DENO__KV__DATAPATH__VALUE_ENCODING__VE_BYTES
}

extension Wire.ReadStatus {
    static let success = COM__DENO__KV__DATAPATH__SNAPSHOT_READ_STATUS__SR_SUCCESS
}

extension Wire.WriteStatus {
    static let success = COM__DENO__KV__DATAPATH__ATOMIC_WRITE_STATUS__AW_SUCCESS
    static let checkFailure = COM__DENO__KV__DATAPATH__ATOMIC_WRITE_STATUS__AW_CHECK_FAILURE
}

func stringKey(_ s: String) -> [UInt8] { [0x02] + Array(s.utf8) + [0x00] }

/// A service over a fresh store, torn down after each test; the shared setup
/// of the protocol-layer tests. The store is a temp-file SQLite database, or
/// `MemoryStorage` with KVCONNECT_TEST_BACKEND=memory (`make test` runs both).
class ServiceTestCase: XCTestCase {
    static func makeStore(_ dir: URL) throws -> any KVStorage {
        switch ProcessInfo.processInfo.environment["KVCONNECT_TEST_BACKEND"] ?? "sqlite" {
        case "memory": return MemoryStorage(databaseId: UUID().uuidString.lowercased())
        case "sqlite": return try SQLiteStore(path: dir.appendingPathComponent("db.sqlite3").path)
        case let other: throw XCTSkip("unknown KVCONNECT_TEST_BACKEND \(other)")
        }
    }

    var dir: URL!
    var store: (any KVStorage)!
    var service: KVConnectService!
    let accessToken = "service-test-token-123"
    let signer = TokenSigner(secret: Array(repeating: 5, count: 32))

    /// The service's clock (set before `makeService`).
    var clock: WallClock = .system

    /// Override to adjust the configuration or logger before each test.
    func configure(_ config: inout ServiceConfiguration) {}
    func makeLogger() -> Logger { Logger(label: "test") }

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvc-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        store = try Self.makeStore(dir)
        makeService { _ in }
    }

    /// (Re)builds the service; `extra` runs after `configure`.
    func makeService(_ extra: (inout ServiceConfiguration) -> Void) {
        var config = ServiceConfiguration()
        configure(&config)
        extra(&config)
        service = KVConnectService(
            tenants: [Tenant(store: store, accessTokens: [accessToken])], signer: signer,
            configuration: config, logger: makeLogger(), clock: clock)
    }

    override func tearDown() {
        store?.close()
        try? FileManager.default.removeItem(at: dir)
    }

    /// One request through the service, waiting for its (possibly async) answer.
    func send(
        _ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = [],
        timeout: TimeInterval = 10
    ) -> ProtocolResponse {
        let done = expectation(description: "response")
        nonisolated(unsafe) var response: ProtocolResponse?
        service.handle(
            ProtocolRequest(method: method, path: path, headers: headers.map { (name: $0.0, value: $0.1) }, body: body)
        ) {
            response = $0
            done.fulfill()
        }
        wait(for: [done], timeout: timeout)
        return response!
    }

    /// A data-plane token for the test store, valid for a minute.
    func dataPlaneToken(scope: DataPlaneToken.Scope = .readWrite) -> String {
        signer.sign(
            DataPlaneToken(
                databaseId: store.databaseId,
                expiresAtMs: Int64(Date().timeIntervalSince1970 * 1000) + 60_000, scope: scope))
    }
}
