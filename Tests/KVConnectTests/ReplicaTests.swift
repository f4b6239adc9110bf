import Foundation
import Logging
import Synchronization
import XCTest
@testable import KVConnect
import KVEngine

/// A replica whose health the test sets.
final class SettableHealth: ReplicaHealth {
    let value = Mutex<ReplicaState>(.streaming(lagMs: 0))
    var replicaState: ReplicaState { value.withLock { $0 } }
}

final class LogLines: Sendable {
    let value = Mutex<[String]>([])
    func withLock<T>(_ body: (inout [String]) -> T) -> T { value.withLock { body(&$0) } }
}

/// Records log messages, to check that fallbacks are logged once per change.
struct RecordingLogHandler: LogHandler {
    let lines: LogLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(
        level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
        file: String, function: String, line: UInt
    ) {
        lines.withLock { $0.append("\(level): \(message)") }
    }
}

/// The replica handle (`POST /replica`), the eventual endpoint and the
/// fallback to the primary, over two MemoryStorage instances: the primary
/// and a "replica" that is behind (it never sees the primary's writes).
final class ReplicaTests: XCTestCase {
    let accessToken = "replica-test-token-1"
    let signer = TokenSigner(secret: Array(repeating: 9, count: 32))
    var primary: MemoryStorage!
    var replica: MemoryStorage!
    var health: SettableHealth!
    var service: KVConnectService!
    let logLines = LogLines()

    override func setUp() {
        let id = UUID().uuidString.lowercased()
        primary = MemoryStorage(databaseId: id)
        replica = MemoryStorage(databaseId: id)
        health = SettableHealth()
        makeService(maxLagMs: 1000, withReplica: true)
    }

    func makeService(maxLagMs: Int64?, withReplica: Bool) {
        let lines = logLines
        let logger = Logger(label: "replica-test") { _ in RecordingLogHandler(lines: lines) }
        let route = withReplica ? ReplicaRoute(store: replica, maxLagMs: maxLagMs, health: health, logger: logger) : nil
        service = KVConnectService(
            tenants: [Tenant(store: primary, tokens: [AccessToken(secret: accessToken)], replica: route)],
            signer: signer, configuration: ServiceConfiguration(), logger: logger)
    }

    override func tearDown() {
        primary.close()
        replica.close()
    }

    func send(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = [])
        -> ProtocolResponse
    {
        let done = expectation(description: "response")
        nonisolated(unsafe) var response: ProtocolResponse?
        service.handle(
            ProtocolRequest(method: method, path: path, headers: headers.map { (name: $0.0, value: $0.1) }, body: body)
        ) {
            response = $0
            done.fulfill()
        }
        wait(for: [done], timeout: 10)
        return response!
    }

    func text(_ r: ProtocolResponse) -> String { String(decoding: r.body, as: UTF8.self) }

    func exchange(_ path: String, version: Int = 3) throws -> [String: Any] {
        let r = send(
            "POST", path, headers: [("authorization", "Bearer \(accessToken)"), ("host", "h:1")],
            body: Array(#"{"supportedVersions":[\#(version)]}"#.utf8))
        XCTAssertEqual(r.status, 200, text(r))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])
    }

    func endpoints(_ o: [String: Any]) -> [[String: String]] { o["endpoints"] as? [[String: String]] ?? [] }

    func write(_ key: String, _ value: UInt8, via endpoint: String, token: String) throws -> [UInt8] {
        let w = send(
            "POST", endpoint + "/atomic_write", headers: [("authorization", "Bearer \(token)")],
            body: Wire.atomicWrite(mutations: [.init(key: stringKey(key), type: .set, value: [value], encoding: .bytes)]
            )
        )
        XCTAssertEqual(w.status, 200, text(w))
        return try XCTUnwrap(Wire.decodeWriteOutput(w.body)).vs
    }

    func read(_ key: String, via endpoint: String, token: String) throws -> (value: [UInt8]?, strong: Bool) {
        let r = send(
            "POST", endpoint + "/snapshot_read", headers: [("authorization", "Bearer \(token)")],
            body: Wire.snapshotRead([(stringKey(key), stringKey(key) + [0], 1, false)]))
        XCTAssertEqual(r.status, 200, text(r))
        let out = try XCTUnwrap(Wire.decodeReadOutput(r.body))
        return (out.ranges[0].first?.value, out.strong)
    }

    func testNormalExchangeListsTheEventualEndpointFirst() throws {
        XCTAssertEqual(
            endpoints(try exchange("/")),
            [
                ["url": "/v2/replica", "consistency": "eventual"],
                ["url": "/v2", "consistency": "strong"]
            ])
        // Version 1 clients get absolute URLs for both.
        XCTAssertEqual(
            endpoints(try exchange("/", version: 1)).map { $0["url"] }, ["http://h:1/v2/replica", "http://h:1/v2"])
        makeService(maxLagMs: nil, withReplica: false)
        XCTAssertEqual(endpoints(try exchange("/")), [["url": "/v2", "consistency": "strong"]])
    }

    func testReplicaHandleReadsFromTheReplicaAndWritesToThePrimary() throws {
        let o = try exchange("/replica")
        XCTAssertEqual(endpoints(o), [["url": "/v2/replica", "consistency": "strong"]])
        XCTAssertEqual(o["databaseId"] as? String, primary.databaseId)
        let token = try XCTUnwrap(o["token"] as? String)
        let vs = try write("k", 1, via: "/v2/replica", token: token)
        XCTAssertEqual(try primary.readKeys([stringKey("k")])[0]?.versionstamp, vs)
        XCTAssertNil(try replica.readKeys([stringKey("k")])[0])
        // The replica has not seen the write: the replica path is stale, the normal one is not.
        let stale = try read("k", via: "/v2/replica", token: token)
        XCTAssertNil(stale.value)
        XCTAssertFalse(stale.strong)
        let fresh = try read("k", via: "/v2", token: token)
        XCTAssertEqual(fresh.value, [1])
        XCTAssertTrue(fresh.strong)
        // Once the replica has the value, the replica path returns it.
        _ = try replica.atomicWriteSync(
            AtomicWrite(mutations: [Mutation(key: stringKey("k"), kind: .set(KVValue(data: [2], encoding: .bytes)))]))
        XCTAssertEqual(try read("k", via: "/v2/replica", token: token).value, [2])
    }

    func testReplicaHandleWithoutAReplicaIs404AndNeedsTheAccessToken() {
        XCTAssertEqual(send("POST", "/replica").status, 401)
        XCTAssertEqual(send("POST", "/replica", headers: [("authorization", "Bearer nope-nope-nope")]).status, 401)
        XCTAssertEqual(send("GET", "/replica", headers: [("authorization", "Bearer \(accessToken)")]).status, 405)
        makeService(maxLagMs: nil, withReplica: false)
        let r = send("POST", "/replica", headers: [("authorization", "Bearer \(accessToken)")])
        XCTAssertEqual(r.status, 404)
        XCTAssertTrue(text(r).contains("replica_database"), text(r))
    }

    func testReplicaDataPathNeedsAValidToken() {
        let r = send(
            "POST", "/v2/replica/snapshot_read",
            body: Wire.snapshotRead([(stringKey("k"), stringKey("k") + [0], 1, false)]))
        XCTAssertEqual(r.status, 401)
        XCTAssertEqual(send("GET", "/v2/replica/snapshot_read").status, 405)
    }

    func testLaggingOrUnavailableReplicaFallsBackToThePrimaryAndLogsOnce() throws {
        let token = try XCTUnwrap(try exchange("/replica")["token"] as? String)
        _ = try write("k", 1, via: "/v2", token: token)
        XCTAssertNil(try read("k", via: "/v2/replica", token: token).value)

        health.value.withLock { $0 = .streaming(lagMs: 5000) }
        for _ in 0..<5 {
            let r = try read("k", via: "/v2/replica", token: token)
            XCTAssertEqual(r.value, [1])
            XCTAssertFalse(r.strong)
        }
        XCTAssertEqual(logLines.withLock { $0.filter { $0.contains("served by the primary") }.count }, 1)
        XCTAssertTrue(logLines.withLock { $0.contains { $0.contains("5000 ms exceeds the bound of 1000 ms") } })

        health.value.withLock { $0 = .streaming(lagMs: 999) }
        for _ in 0..<3 { XCTAssertNil(try read("k", via: "/v2/replica", token: token).value) }
        XCTAssertEqual(logLines.withLock { $0.filter { $0.contains("served by the replica again") }.count }, 1)

        health.value.withLock { $0 = .unavailable(reason: "connection refused") }
        XCTAssertEqual(try read("k", via: "/v2/replica", token: token).value, [1])
        XCTAssertTrue(logLines.withLock { $0.contains { $0.contains("replica unavailable: connection refused") } })
    }

    func testNoBoundKeepsALaggingReplica() throws {
        makeService(maxLagMs: nil, withReplica: true)
        let token = try XCTUnwrap(try exchange("/")["token"] as? String)
        _ = try write("k", 1, via: "/v2", token: token)
        health.value.withLock { $0 = .streaming(lagMs: 3_600_000) }
        XCTAssertNil(try read("k", via: "/v2/replica", token: token).value)
    }

    func testAFailingReplicaReadIsServedByThePrimary() throws {
        let token = try XCTUnwrap(try exchange("/")["token"] as? String)
        _ = try write("k", 1, via: "/v2", token: token)
        replica.close()
        XCTAssertEqual(try read("k", via: "/v2/replica", token: token).value, [1])
    }

    func testWatchThroughTheReplicaPathWatchesThePrimary() throws {
        let token = try XCTUnwrap(try exchange("/replica")["token"] as? String)
        let r = send(
            "POST", "/v2/replica/watch", headers: [("authorization", "Bearer \(token)")],
            body: Wire.watch([stringKey("w")]))
        XCTAssertEqual(r.status, 200, text(r))
        XCTAssertNotNil(r.stream)
    }
}
