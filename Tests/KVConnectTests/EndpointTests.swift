import Foundation
import XCTest
@testable import KVConnect
import KVEngine

/// The route table (method + path → endpoint, 404, 405 with Allow) and that
/// the service answers the route it is given instead of resolving again.
final class EndpointTests: ServiceTestCase {
    let routes = RouteTable(endpointPath: "/v2")

    func testEveryPathResolvesToItsEndpoint() {
        let table: [(String, String, Endpoint)] = [
            ("POST", "/", .metadataExchange(replica: false)),
            ("POST", "/replica", .metadataExchange(replica: true)),
            ("POST", "/v2/snapshot_read", .snapshotRead(replica: false)),
            ("POST", "/v2/replica/snapshot_read", .snapshotRead(replica: true)),
            ("POST", "/v2/atomic_write", .atomicWrite(replica: false)),
            ("POST", "/v2/replica/atomic_write", .atomicWrite(replica: true)),
            ("POST", "/v2/watch", .watch(replica: false)),
            ("POST", "/v2/replica/watch", .watch(replica: true)),
            ("POST", "/v2/queue/lease", .queueLease),
            ("POST", "/v2/queue/ack", .queueAck),
            ("POST", "/v2/queue/fail", .queueFail),
            ("GET", "/healthz", .health),
            ("HEAD", "/healthz", .health),
            ("GET", "/readyz", .ready),
            ("HEAD", "/readyz", .ready),
            ("GET", "/metrics", .metrics),
            // The administration checks its own sub-paths and methods, after the token.
            ("GET", "/admin/queue/stats", .queueAdmin),
            ("DELETE", "/admin/queue/messages/7", .queueAdmin),
            ("PATCH", "/admin/queue/anything", .queueAdmin)
        ]
        for (method, path, endpoint) in table {
            XCTAssertEqual(routes.resolve(method: method, path: path), .endpoint(endpoint), "\(method) \(path)")
        }
    }

    func testUnknownPathsAreNotFound() {
        for path in [
            "", "/nope", "/v2", "/v2/", "/v2/replica", "/v2/replica/", "/v2/snapshot_read/x",
            "/v2/snapshot_readx", "/V2/snapshot_read", "/db/v2/snapshot_read", "/healthz/", "/replica/",
            "/v2/replica/queue/lease", "/v2/replica/replica/watch", "/admin/queue", "/admin/queuex/stats"
        ] {
            XCTAssertEqual(routes.resolve(method: "POST", path: path), .notFound, path)
            XCTAssertEqual(routes.resolve(method: "GET", path: path), .notFound, path)
        }
    }

    func testWrongMethodIsNotAllowedWithAllow() {
        XCTAssertEqual(
            routes.resolve(method: "GET", path: "/v2/snapshot_read"),
            .methodNotAllowed(.snapshotRead(replica: false), allow: "POST"))
        XCTAssertEqual(
            routes.resolve(method: "GET", path: "/replica"),
            .methodNotAllowed(.metadataExchange(replica: true), allow: "POST"))
        XCTAssertEqual(
            routes.resolve(method: "PUT", path: "/v2/queue/lease"),
            .methodNotAllowed(.queueLease, allow: "POST"))
        XCTAssertEqual(routes.resolve(method: "POST", path: "/healthz"), .methodNotAllowed(.health, allow: "GET, HEAD"))
        XCTAssertEqual(
            routes.resolve(method: "POST", path: "/metrics"), .methodNotAllowed(.metrics, allow: "GET, HEAD"))
        // Methods are case-sensitive (RFC 9110).
        XCTAssertEqual(
            routes.resolve(method: "post", path: "/"),
            .methodNotAllowed(.metadataExchange(replica: false), allow: "POST"))
    }

    func testEndpointPathIsTheConfiguredOne() {
        let other = RouteTable(endpointPath: "/api/kv")
        XCTAssertEqual(
            other.resolve(method: "POST", path: "/api/kv/atomic_write"), .endpoint(.atomicWrite(replica: false)))
        XCTAssertEqual(
            other.resolve(method: "POST", path: "/api/kv/replica/snapshot_read"),
            .endpoint(.snapshotRead(replica: true)))
        XCTAssertEqual(other.resolve(method: "POST", path: "/v2/atomic_write"), .notFound)
        XCTAssertEqual(other.resolve(method: "POST", path: "/"), .endpoint(.metadataExchange(replica: false)))
    }

    func testOnlyTheLeaseIsALongPoll() {
        let all: [Endpoint] = [
            .metadataExchange(replica: false), .snapshotRead(replica: false), .atomicWrite(replica: true),
            .watch(replica: false), .queueLease, .queueAck, .queueFail, .queueAdmin, .health, .ready,
            .metrics
        ]
        XCTAssertEqual(all.filter(\.isLongPoll), [.queueLease])
    }

    func testServiceAnswers404And405() {
        let notFound = send("GET", "/nope")
        XCTAssertEqual(notFound.status, 404)
        XCTAssertEqual(String(decoding: notFound.body, as: UTF8.self), "not found: /nope\n")
        let wrong = send("GET", "/v2/watch")
        XCTAssertEqual(wrong.status, 405)
        XCTAssertEqual(
            String(decoding: wrong.body, as: UTF8.self), "method GET not allowed on /v2/watch (allowed: POST)\n")
        XCTAssertEqual(wrong.headers.first { $0.name == "allow" }?.value, "POST")
        let metrics = send("DELETE", "/metrics")
        XCTAssertEqual(metrics.status, 405)
        XCTAssertEqual(metrics.headers.first { $0.name == "allow" }?.value, "GET, HEAD")
    }

    /// The service acts on the route it is handed (the adapter's), not on a
    /// second reading of the path.
    func testServiceUsesTheGivenRoute() {
        func answer(_ route: Route, _ method: String, _ path: String) -> ProtocolResponse {
            nonisolated(unsafe) var r: ProtocolResponse?
            service.handle(ProtocolRequest(method: method, path: path, headers: [], body: []), route: route) { r = $0 }
            return r!
        }
        XCTAssertEqual(answer(.notFound, "GET", "/healthz").status, 404)
        XCTAssertEqual(answer(.endpoint(.health), "GET", "/elsewhere").status, 200)
        let r = answer(.methodNotAllowed(.ready, allow: "GET, HEAD"), "GET", "/readyz")
        XCTAssertEqual(r.status, 405)
        XCTAssertEqual(r.headers.first { $0.name == "allow" }?.value, "GET, HEAD")
    }
}
