import Foundation
import XCTest
@testable import KVPostgres
import KVEngine

/// The libpq layer: binary parameters and results, pipelines, error classes.
final class PGConnectionTests: XCTestCase {
    var url: String!

    override func setUpWithError() throws {
        url = try PGTestCluster.url()
    }

    func testBinaryParametersAndResultsRoundTrip() throws {
        let c = try PGConnection(conninfo: url, searchPath: "public")
        let blob: Bytes = [0, 1, 2, 0xFF, 0x80, 0]
        let r = try c.query(
            "SELECT $1::bytea, $2::int8, $3::int2, $4::text, $5::bytea IS NULL, $6::bytea",
            [.bytea(blob), .int8(-5_000_000_000), .int2(-7), .text("héllo"), .null, .bytea([])])
        XCTAssertEqual(r.bytes(0, 0), blob)
        XCTAssertEqual(r.int64(0, 1), -5_000_000_000)
        XCTAssertEqual(r.int64(0, 2), -7)
        XCTAssertEqual(r.text(0, 3), "héllo")
        XCTAssertTrue(r.bool(0, 4))
        XCTAssertEqual(r.bytes(0, 5), [])
        XCTAssertFalse(r.isNull(0, 5))
    }

    func testArraysUnnestWithNullsAndEmpty() throws {
        let c = try PGConnection(conninfo: url, searchPath: "public")
        let r = try c.query(
            "SELECT a, b, t FROM unnest($1::bytea[], $2::int8[], $3::text[]) AS u(a, b, t)",
            [.byteaArray([[1], [], [2, 3]]), .int8Array([1, nil, -3]), .textArray(["x", "", "z"])])
        XCTAssertEqual(r.rowCount, 3)
        XCTAssertEqual(r.bytes(1, 0), [])
        XCTAssertTrue(r.isNull(1, 1))
        XCTAssertEqual(r.int64(2, 1), -3)
        XCTAssertEqual(r.text(2, 2), "z")
        let e = try c.query("SELECT count(*) FROM unnest($1::bytea[])", [.byteaArray([])])
        XCTAssertEqual(e.int64(0, 0), 0)
    }

    func testPipelineErrorReportsIndexAndLeavesConnectionUsable() throws {
        let c = try PGConnection(conninfo: url, searchPath: "public")
        XCTAssertThrowsError(
            try c.pipeline([PGQuery("BEGIN"), PGQuery("SELECT 1/0"), PGQuery("SELECT 1"), PGQuery("COMMIT")])
        ) { e in
            let pe = e as? PGError
            XCTAssertEqual(pe?.failedAt, 1)
            XCTAssertEqual(pe?.sqlstate, "22012")
            XCTAssertEqual(pe?.kind, .other)
        }
        c.rollbackQuietly()
        XCTAssertEqual(try c.query("SELECT 41 + 1").int64(0, 0), 42)
        XCTAssertFalse(c.inTransaction)
    }

    func testTerminatedBackendIsConnectionLost() throws {
        let c = try PGConnection(conninfo: url, searchPath: "public")
        let killer = try PGConnection(conninfo: url, searchPath: "public")
        try killer.query("SELECT pg_terminate_backend($1::int4)", [.int8(Int64(c.backendPID))])
        XCTAssertThrowsError(try c.query("SELECT 1")) { e in
            XCTAssertEqual((e as? PGError)?.kind, .connectionLost, "\(e)")
        }
        XCTAssertTrue(c.isBroken)
    }

    func testUnreachableServerIsConnectionLost() {
        XCTAssertThrowsError(
            try PGConnection(conninfo: "postgresql://nobody@127.0.0.1:1/x?connect_timeout=2", searchPath: "x")
        ) { e in
            XCTAssertEqual((e as? PGError)?.kind, .connectionLost)
            XCTAssertEqual((e as? PGError)?.asKVError.isUnavailable, true)
        }
    }

    func testSQLStateClassification() {
        XCTAssertEqual(PGError.classify(sqlstate: "40001", connectionBad: false), .retry)
        XCTAssertEqual(PGError.classify(sqlstate: "40P01", connectionBad: false), .retry)
        XCTAssertEqual(PGError.classify(sqlstate: "57P01", connectionBad: false), .connectionLost)
        XCTAssertEqual(PGError.classify(sqlstate: "08006", connectionBad: false), .connectionLost)
        XCTAssertEqual(PGError.classify(sqlstate: "23505", connectionBad: false), .other)
        XCTAssertEqual(PGError.classify(sqlstate: "23505", connectionBad: true), .connectionLost)
    }

    func testNotificationPayloadRoundTripAndOverflow() {
        let n = PGNotification(
            sender: "s", counter: 42, earliestExpiryMs: 7, earliestDueMs: nil, keys: [[0, 1], [], [0xFF]])
        XCTAssertEqual(PGNotification.parse(n.payload), n)
        let many = PGNotification(
            sender: "s", counter: 1, earliestExpiryMs: nil, earliestDueMs: 3,
            keys: (0..<2000).map { Bytes(repeating: UInt8($0 % 256), count: 16) })
        XCTAssertLessThanOrEqual(many.payload.utf8.count, PGNotification.maxPayload)
        XCTAssertNil(PGNotification.parse(many.payload)?.keys, "too many keys → wake everyone")
        XCTAssertNil(PGNotification.parse("garbage"))
    }

    func testPasswordsAreMasked() {
        XCTAssertEqual(PGMask.mask("postgresql://kv:s3cret@db:5432/kv"), "postgresql://kv:***@db:5432/kv")
        XCTAssertEqual(
            PGMask.mask("postgresql://db/kv?user=a&password=x y"), "postgresql://db/kv?user=a&password=*** y")
        XCTAssertEqual(PGMask.mask("host=db password='a b\\'c' user=kv"), "host=db password=*** user=kv")
        XCTAssertEqual(PGMask.mask("postgresql://kv@db/kv"), "postgresql://kv@db/kv")
    }
}

extension KVError {
    var isUnavailable: Bool { if case .unavailable = self { return true } else { return false } }
}
