import Foundation
import Logging
import XCTest
@testable import KVConnect
import KVEngine

final class QueueEndpointTests: ServiceTestCase {
    var headers: [(String, String)] = []

    override func configure(_ config: inout ServiceConfiguration) {
        config.queueLongPollMaxMs = 3000
        config.queueVisibilityTimeoutMs = 30_000
    }

    override func setUpWithError() throws {
        try super.setUpWithError()
        headers = [("authorization", "Bearer \(dataPlaneToken())"), ("content-type", "application/json")]
    }

    func call(
        _ path: String, _ body: String = "", headers h: [(String, String)]? = nil,
        timeout: TimeInterval = 10
    ) -> ProtocolResponse {
        send("POST", path, headers: h ?? headers, body: Array(body.utf8), timeout: timeout)
    }

    func json(_ r: ProtocolResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any]) ?? [:]
    }

    func enqueue(_ payload: [UInt8], keys: [[UInt8]] = [], backoff: [UInt32] = [], deadline: Int64 = 0) {
        let r = try? store.atomicWriteSync(
            AtomicWrite(enqueues: [
                Enqueue(payload: payload, deadlineMs: deadline, keysIfUndelivered: keys, backoffSchedule: backoff)
            ]))
        XCTAssertNotNil(r)
    }

    func testLeaseAckAndNotFound() throws {
        XCTAssertEqual(call("/v2/queue/lease").status, 204)
        enqueue([0xff, 0x0f, 0x49, 0x54])
        let r = call("/v2/queue/lease", #"{"waitMs":0,"visibilityTimeoutMs":5000}"#)
        XCTAssertEqual(r.status, 200, String(decoding: r.body, as: UTF8.self))
        let o = json(r)
        let id = try XCTUnwrap(o["id"] as? String)
        XCTAssertEqual(o["attempt"] as? Int, 1)
        XCTAssertEqual(o["payload"] as? String, Data([0xff, 0x0f, 0x49, 0x54]).base64EncodedString())
        XCTAssertNotNil(o["messageId"] as? String)
        XCTAssertTrue((o["leaseExpiresAt"] as? String)?.hasSuffix("Z") ?? false)
        XCTAssertEqual(call("/v2/queue/lease").status, 204, "in flight: not leased twice")
        let a = call("/v2/queue/ack", #"{"id":"\#(id)"}"#)
        XCTAssertEqual(a.status, 200)
        XCTAssertEqual(json(a)["result"] as? String, "acknowledged")
        XCTAssertEqual(call("/v2/queue/ack", #"{"id":"\#(id)"}"#).status, 404)
        XCTAssertEqual(call("/v2/queue/ack", #"{"id":"nonsense"}"#).status, 400)
        XCTAssertEqual(call("/v2/queue/ack", #"not json"#).status, 400)
    }

    func testFailRetriesThenDeadLetters() throws {
        enqueue([0xff, 0x0f, 0x49, 0x02], keys: [stringKey("dead")], backoff: [50])
        let id1 = try XCTUnwrap(json(call("/v2/queue/lease"))["id"] as? String)
        let f1 = call("/v2/queue/fail", #"{"id":"\#(id1)"}"#)
        XCTAssertEqual(json(f1)["result"] as? String, "retryScheduled")
        let l2 = json(call("/v2/queue/lease", #"{"waitMs":2000}"#))
        XCTAssertEqual(l2["attempt"] as? Int, 2)
        let f2 = json(call("/v2/queue/fail", #"{"id":"\#(l2["id"] as! String)"}"#))
        XCTAssertEqual(f2["result"] as? String, "deadLettered")
        XCTAssertEqual((f2["versionstamp"] as? String)?.count, 20)
        XCTAssertEqual(
            try store.readKeys([stringKey("dead")])[0]?.value, KVValue(data: [0xff, 0x0f, 0x49, 0x02], encoding: .v8))
    }

    func testExpiredLeaseIsAConflict() throws {
        enqueue([0xff, 0x0f, 0x30])
        let old = try XCTUnwrap(json(call("/v2/queue/lease", #"{"visibilityTimeoutMs":150}"#))["id"] as? String)
        let fresh = json(call("/v2/queue/lease", #"{"waitMs":2000}"#))
        XCTAssertNotEqual(fresh["id"] as? String, old)
        XCTAssertEqual(call("/v2/queue/ack", #"{"id":"\#(old)"}"#).status, 409)
        XCTAssertEqual(call("/v2/queue/ack", #"{"id":"\#(fresh["id"] as! String)"}"#).status, 200)
    }

    func testLongPollIsAnsweredWhenAMessageArrives() throws {
        let done = expectation(description: "lease answered")
        nonisolated(unsafe) var response: ProtocolResponse?
        let start = Date()
        service.handle(
            ProtocolRequest(
                method: "POST", path: "/v2/queue/lease", headers: headers.map { (name: $0.0, value: $0.1) },
                body: Array(#"{"waitMs":2500}"#.utf8))
        ) {
            response = $0
            done.fulfill()
        }
        // handle() returned at once: the long-poll holds no caller thread.
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.5)
        usleep(200_000)
        enqueue([0xff, 0x0f, 0x5f])
        wait(for: [done], timeout: 5)
        XCTAssertEqual(response?.status, 200)
        XCTAssertLessThan(Date().timeIntervalSince(start), 2.0)
    }

    func testLongPollWaitIsCappedAndEndsWith204() {
        let t0 = Date()
        XCTAssertEqual(call("/v2/queue/lease", #"{"waitMs":600000}"#, timeout: 10).status, 204)
        let dt = Date().timeIntervalSince(t0)
        XCTAssertGreaterThan(dt, 2.8)
        XCTAssertLessThan(dt, 5)
    }

    func testTokenRules() {
        XCTAssertEqual(call("/v2/queue/lease", headers: []).status, 401)
        let ro = signer.sign(
            DataPlaneToken(
                databaseId: store.databaseId,
                expiresAtMs: Int64(Date().timeIntervalSince1970 * 1000) + 60_000, scope: .readOnly))
        XCTAssertEqual(call("/v2/queue/lease", headers: [("authorization", "Bearer \(ro)")]).status, 403)
        XCTAssertEqual(
            call("/v2/queue/ack", #"{"id":"1-1"}"#, headers: [("authorization", "Bearer \(ro)")]).status, 403)
        let done = expectation(description: "405")
        service.handle(ProtocolRequest(method: "GET", path: "/v2/queue/lease", headers: [], body: [])) {
            XCTAssertEqual($0.status, 405)
            done.fulfill()
        }
        wait(for: [done], timeout: 5)
    }

    func testBatchLeaseClaimsUpToMaxOldestFirstAndBatchSettle() throws {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        for i in 0..<5 { enqueue([0xff, 0x0f, 0x49, UInt8(2 * i)], deadline: now - 100 + Int64(i)) }
        let r = call("/v2/queue/lease", #"{"max":3,"visibilityTimeoutMs":5000}"#)
        XCTAssertEqual(r.status, 200, String(decoding: r.body, as: UTF8.self))
        let first = try XCTUnwrap(json(r)["messages"] as? [[String: Any]])
        XCTAssertEqual(
            first.compactMap { $0["payload"] as? String },
            (0..<3).map { Data([0xff, 0x0f, 0x49, UInt8(2 * $0)]).base64EncodedString() }, "oldest deadline first")
        let rest = try XCTUnwrap(json(call("/v2/queue/lease", #"{"max":256}"#))["messages"] as? [[String: Any]])
        XCTAssertEqual(rest.count, 2, "only what is left")
        XCTAssertEqual(call("/v2/queue/lease", #"{"max":4}"#).status, 204, "all in flight")
        let ids = (first + rest).compactMap { $0["id"] as? String }
        XCTAssertEqual(Set(ids).count, 5)
        let list = "[" + ids.map { "\"\($0)\"" }.joined(separator: ",") + "]"
        let a = json(call("/v2/queue/ack", #"{"ids":\#(list)}"#))
        let results = try XCTUnwrap(a["results"] as? [[String: Any]])
        XCTAssertEqual(results.compactMap { $0["id"] as? String }, ids, "results in request order")
        XCTAssertEqual(results.compactMap { $0["result"] as? String }, Array(repeating: "acknowledged", count: 5))
        let again = try XCTUnwrap(json(call("/v2/queue/ack", #"{"ids":\#(list)}"#))["results"] as? [[String: Any]])
        XCTAssertEqual(again.compactMap { $0["status"] as? Int }, Array(repeating: 404, count: 5))
        XCTAssertEqual(try store.queueCounts(), QueueCounts(ready: 0, inflight: 0))
    }

    func testBatchLeaseWaitsForTheFirstMessageOnly() throws {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        enqueue([0xff, 0x0f, 0x49, 0x02], deadline: now + 500)
        enqueue([0xff, 0x0f, 0x49, 0x04], deadline: now + 60_000)
        let r = call("/v2/queue/lease", #"{"max":8,"waitMs":2500}"#)
        XCTAssertEqual(r.status, 200)
        XCTAssertGreaterThanOrEqual(Int64(Date().timeIntervalSince1970 * 1000), now + 500, "not before it was due")
        XCTAssertEqual((json(r)["messages"] as? [[String: Any]])?.count, 1, "the later one is not due")
    }

    func testBatchLimitsAreRefusedWithAReasonAndChangeNothing() throws {
        enqueue([0xff, 0x0f, 0x30])
        for (body, reason) in [
            (#"{"max":0}"#, "invalid max: expected an integer of messages, 1 ... 256"),
            (#"{"max":257}"#, "invalid max: expected an integer of messages, 1 ... 256"),
            (#"{"max":"8"}"#, "invalid max"), (#"{"max":1.5}"#, "invalid max"), (#"{"max":-1}"#, "invalid max"),
            (#"{"visibilityTimeoutMs":99}"#, "invalid visibilityTimeoutMs"), (#"{"waitMs":-5}"#, "invalid waitMs"),
            (#"[1]"#, "invalid body: expected a JSON object")
        ] {
            let r = call("/v2/queue/lease", body)
            XCTAssertEqual(r.status, 400, body)
            XCTAssertTrue(
                String(decoding: r.body, as: UTF8.self).contains(reason),
                "\(body): \(String(decoding: r.body, as: UTF8.self))")
            XCTAssertTrue(r.headers.contains { $0.0 == "content-type" && $0.1.hasPrefix("text/plain") }, body)
        }
        let tooMany = "[" + (0...256).map { "\"\($0 + 1)-1\"" }.joined(separator: ",") + "]"
        for body in [#"{"ids":[]}"#, #"{"ids":\#(tooMany)}"#, #"{"ids":[1]}"#, #"{"ids":["1-1","x"]}"#] {
            let r = call("/v2/queue/ack", body)
            XCTAssertEqual(r.status, 400, body)
            XCTAssertTrue(String(decoding: r.body, as: UTF8.self).hasPrefix("invalid "), body)
        }
        XCTAssertEqual(try store.queueCounts(), QueueCounts(ready: 1, inflight: 0), "nothing was leased or settled")
    }
}
