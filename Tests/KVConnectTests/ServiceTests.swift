import Foundation
import Logging
import Synchronization
import XCTest
@testable import KVConnect
import KVEngine
import KVSQLite

final class ServiceTests: ServiceTestCase {
    func call(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = [])
        -> ProtocolResponse
    {
        send(method, path, headers: headers, body: body)
    }

    func text(_ r: ProtocolResponse) -> String { String(decoding: r.body, as: UTF8.self) }

    func dataToken() throws -> (token: String, db: String) {
        let r = call(
            "POST", "/", headers: [("authorization", "Bearer \(accessToken)")],
            body: Array(#"{"supportedVersions":[1,2,3]}"#.utf8))
        XCTAssertEqual(r.status, 200, text(r))
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])
        return (o["token"] as! String, o["databaseId"] as! String)
    }

    func testDataPathMediaTypes() {
        for ok in [
            "application/x-protobuf", "Application/X-Protobuf; charset=binary", " application/protobuf ",
            "application/octet-stream;x=y", "\tAPPLICATION/OCTET-STREAM"
        ] {
            XCTAssertTrue(KVConnectService.isProtobufMediaType(ok), ok)
        }
        for bad in [
            "", "text/html", "application/x-protobufx", "application/x-proto", "application/json",
            "application/ x-protobuf", "application/x-protobuf\u{0}"
        ] {
            XCTAssertFalse(KVConnectService.isProtobufMediaType(bad), bad)
        }
    }

    func testMetadataExchangeAuth() {
        XCTAssertEqual(call("POST", "/").status, 401)
        XCTAssertEqual(call("POST", "/", headers: [("authorization", "Bearer wrong-token-xyz")]).status, 401)
        let r = call("POST", "/", headers: [("authorization", "Bearer \(accessToken)"), ("host", "example:9")])
        XCTAssertEqual(r.status, 200)
        XCTAssertTrue(text(r).contains("\"url\":\"http://example:9/v2\""), text(r))
        XCTAssertTrue(text(r).contains(store.databaseId))
    }

    func testWriteThenReadThroughTheService() throws {
        let (token, db) = try dataToken()
        let h = [
            ("authorization", "Bearer \(token)"), ("x-denokv-database-id", db),
            ("content-type", "application/x-protobuf")
        ]
        let w = call(
            "POST", "/v2/atomic_write", headers: h,
            body: Wire.atomicWrite(mutations: [.init(key: stringKey("k"), type: .set, value: [7], encoding: .bytes)]))
        XCTAssertEqual(w.status, 200, text(w))
        let out = try XCTUnwrap(Wire.decodeWriteOutput(w.body))
        XCTAssertEqual(out.status, .success)
        let r = call(
            "POST", "/v2/snapshot_read", headers: h,
            body: Wire.snapshotRead([(stringKey("k"), stringKey("k") + [0], 1, false)]))
        XCTAssertEqual(r.status, 200)
        let read = try XCTUnwrap(Wire.decodeReadOutput(r.body))
        XCTAssertEqual(read.ranges[0].first?.value, [7])
        XCTAssertEqual(read.ranges[0].first?.vs, out.vs)
    }

    func testEngineErrorsMapTo400WithTheExactText() throws {
        let (token, _) = try dataToken()
        let h = [("authorization", "Bearer \(token)")]
        _ = call(
            "POST", "/v2/atomic_write", headers: h,
            body: Wire.atomicWrite(mutations: [.init(key: stringKey("s"), type: .set, value: [1], encoding: .bytes)]))
        let r = call(
            "POST", "/v2/atomic_write", headers: h,
            body: Wire.atomicWrite(mutations: [
                .init(key: stringKey("s"), type: .sum, value: [1, 0, 0, 0, 0, 0, 0, 0], encoding: .le64)
            ]))
        XCTAssertEqual(r.status, 400)
        XCTAssertEqual(
            text(r).trimmingCharacters(in: .newlines),
            "Failed to perform 'sum' mutation on a non-U64 value in the database")
    }

    func testDataPathAuthErrors() throws {
        let (token, _) = try dataToken()
        let body = Wire.snapshotRead([([1], [2], 1, false)])
        XCTAssertEqual(call("POST", "/v2/snapshot_read", body: body).status, 401)
        XCTAssertEqual(
            call("POST", "/v2/snapshot_read", headers: [("authorization", "Bearer \(accessToken)")], body: body).status,
            401)
        let other = call(
            "POST", "/v2/snapshot_read",
            headers: [
                ("authorization", "Bearer \(token)"),
                ("x-transaction-domain-id", "00000000-0000-0000-0000-000000000000")
            ], body: body)
        XCTAssertEqual(other.status, 401)
        XCTAssertTrue(text(other).contains("not valid for database"))
        let expired = signer.sign(DataPlaneToken(databaseId: store.databaseId, expiresAtMs: 1))
        let e = call("POST", "/v2/snapshot_read", headers: [("authorization", "Bearer \(expired)")], body: body)
        XCTAssertEqual(e.status, 401)
        XCTAssertTrue(text(e).contains("expired"))
        let unknownDb = signer.sign(
            DataPlaneToken(databaseId: "11111111-1111-1111-1111-111111111111", expiresAtMs: Int64.max))
        XCTAssertEqual(
            call("POST", "/v2/snapshot_read", headers: [("authorization", "Bearer \(unknownDb)")], body: body).status,
            401)
        let ro = signer.sign(DataPlaneToken(databaseId: store.databaseId, expiresAtMs: Int64.max, scope: .readOnly))
        XCTAssertEqual(
            call("POST", "/v2/snapshot_read", headers: [("authorization", "Bearer \(ro)")], body: body).status, 200)
        let denied = call(
            "POST", "/v2/atomic_write", headers: [("authorization", "Bearer \(ro)")], body: Wire.atomicWrite())
        XCTAssertEqual(denied.status, 403)
        XCTAssertTrue(text(denied).contains("read-only"))
        let ct = call(
            "POST", "/v2/snapshot_read", headers: [("authorization", "Bearer \(token)"), ("content-type", "text/html")],
            body: body)
        XCTAssertEqual(ct.status, 415)
    }

    func testTenantSelectionAndScopesFromAccessTokens() throws {
        let other = try SQLiteStore(path: dir.appendingPathComponent("other.sqlite3").path)
        defer { other.close() }
        let a = Tenant(
            name: "a", store: store,
            tokens: [
                AccessToken(secret: "a-rw-token-123"),
                AccessToken(
                    sha256Hex: "a3c5d1b0e2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6", scope: .readOnly)!
            ])
        let b = Tenant(name: "b", store: other, tokens: [AccessToken(secret: "b-rw-token-123")])
        let ro = AccessToken(secret: "a-ro-token-123", scope: .readOnly)
        a.replaceTokens([AccessToken(secret: "a-rw-token-123"), ro])
        let svc = KVConnectService(
            tenants: [a, b], signer: signer, configuration: ServiceConfiguration(), logger: Logger(label: "t"))
        func meta(_ t: String) -> (Int, [String: Any]) {
            nonisolated(unsafe) var r: ProtocolResponse?
            svc.handle(
                ProtocolRequest(method: "POST", path: "/", headers: [("authorization", "Bearer \(t)")], body: [])
            ) { r = $0 }
            return (r!.status, (try? JSONSerialization.jsonObject(with: Data(r!.body))) as? [String: Any] ?? [:])
        }
        XCTAssertEqual(meta("a-rw-token-123").1["databaseId"] as? String, store.databaseId)
        XCTAssertEqual(meta("b-rw-token-123").1["databaseId"] as? String, other.databaseId)
        XCTAssertEqual(meta("nobody-token-123").0, 401)
        let roToken = try XCTUnwrap(meta("a-ro-token-123").1["token"] as? String)
        XCTAssertEqual(try signer.verify(roToken, nowMs: 0).scope, .readOnly)
        nonisolated(unsafe) var w: ProtocolResponse?
        svc.handle(
            ProtocolRequest(
                method: "POST", path: "/v2/atomic_write", headers: [("authorization", "Bearer \(roToken)")],
                body: Wire.atomicWrite())
        ) { w = $0 }
        XCTAssertEqual(w?.status, 403)
        // A replaced token stops working at once.
        b.replaceTokens([AccessToken(secret: "b-rotated-token-1")])
        XCTAssertEqual(meta("b-rw-token-123").0, 401)
        XCTAssertEqual(meta("b-rotated-token-1").0, 200)
        XCTAssertNil(AccessToken(sha256Hex: "xyz"))
    }

    /// Token expiry and enqueue deadlines come from the injected clock, not
    /// the machine's.
    func testInjectedClockDecidesTokenExpiryAndDeadlines() throws {
        let t0: Int64 = 1_700_000_000_000, lifetime: Int64 = 3_600_000
        let time = ManualTime(t0)
        clock = WallClock { time.ms }
        makeService { _ in }
        let meta = call(
            "POST", "/", headers: [("authorization", "Bearer \(accessToken)")],
            body: Array(#"{"supportedVersions":[3]}"#.utf8))
        XCTAssertEqual(meta.status, 200, text(meta))
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(meta.body)) as? [String: Any])
        XCTAssertEqual(o["expiresAt"] as? String, MetadataExchange.rfc3339(ms: t0 + lifetime))
        let token = try XCTUnwrap(o["token"] as? String)
        XCTAssertEqual(try signer.verify(token, nowMs: 0).expiresAtMs, t0 + lifetime)

        let h = [("authorization", "Bearer \(token)")]
        let read = Wire.snapshotRead([([1], [2], 1, false)])
        time.ms = t0 + lifetime - 1
        XCTAssertEqual(call("POST", "/v2/snapshot_read", headers: h, body: read).status, 200)
        // A deadline 31 days after the clock is too far, though long past by the machine's time.
        let far = Wire.atomicWrite(enqueues: [([0xff, 0x0f, 0x5f], time.ms + 31 * 86_400_000, [], [])])
        let w = call("POST", "/v2/atomic_write", headers: h, body: far)
        XCTAssertEqual(w.status, 400)
        XCTAssertTrue(text(w).contains("enqueue delay too long"), text(w))
        time.ms = t0 + lifetime
        let expired = call("POST", "/v2/snapshot_read", headers: h, body: read)
        XCTAssertEqual(expired.status, 401)
        XCTAssertTrue(text(expired).contains("expired"), text(expired))
    }

    func testRoutingAndHealth() {
        XCTAssertEqual(call("GET", "/healthz").status, 200)
        XCTAssertEqual(call("HEAD", "/healthz").status, 200)
        XCTAssertEqual(call("GET", "/readyz").status, 200)
        XCTAssertEqual(call("GET", "/nope").status, 404)
        let m = call("GET", "/v2/atomic_write")
        XCTAssertEqual(m.status, 405)
        XCTAssertTrue(m.headers.contains { $0.name == "allow" && $0.value == "POST" })
        XCTAssertEqual(call("PUT", "/").status, 405)
        XCTAssertEqual(call("POST", "/healthz").status, 405)
    }
}

/// A clock the test moves by hand.
final class ManualTime: Sendable {
    private let value: Mutex<Int64>
    init(_ ms: Int64) { value = Mutex(ms) }
    var ms: Int64 {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}
