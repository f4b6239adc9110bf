import Foundation
import KVConnect
import KVEngine
import KVSQLite
import Logging
import Threading
import XCTest
@testable import KVConsole

/// The console's endpoints against a real store, without HTTP: sign-in,
/// CSRF, read-only scope and versionstamp conflicts.
final class ConsoleServiceTests: XCTestCase {
    var dir: URL!
    var store: SQLiteStore!
    var console: ConsoleService!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvconsole-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        store = try SQLiteStore(path: dir.appendingPathComponent("kv.sqlite3").path)
        let tenant = Tenant(
            store: store,
            tokens: [
                AccessToken(secret: "rw-token-0123456789"),
                AccessToken(secret: "ro-token-0123456789", scope: .readOnly)
            ])
        var c = ConsoleConfiguration()
        c.failedSignInDelayMs = 0
        c.maxFailedSignIns = 2
        console = ConsoleService(tenants: [tenant], configuration: c, stats: nil, logger: Logger(label: "test"))
    }

    override func tearDownWithError() throws {
        store.close()
        try? FileManager.default.removeItem(at: dir)
    }

    struct Reply {
        var status: Int
        var headers: [(name: String, value: String)]
        var text: String
        var json: JSONValue? { try? JSONValue.parse(text) }
        func header(_ n: String) -> String? { headers.first { $0.name == n }?.value }
    }

    func call(
        _ method: String, _ path: String, query: String? = nil, body: String? = nil,
        headers: [(String, String)] = [], remote: String = "10.0.0.1"
    ) -> Reply {
        var h: [(name: String, value: String)] = [("host", "127.0.0.1:4512")]
        if body != nil { h.append(("content-type", "application/json")) }
        h += headers.map { (name: $0.0, value: $0.1) }
        let response = ResultBox<ProtocolResponse>()
        console.handle(
            ConsoleRequest(
                method: method, path: path, query: query, headers: h,
                body: Array((body ?? "").utf8), remoteAddress: remote)
        ) { response.set($0) }
        guard let out = response.wait(timeoutMs: 10_000) else {
            XCTFail("no response to \(method) \(path) within 10 s")
            return Reply(status: 0, headers: [], text: "")
        }
        return Reply(status: out.status, headers: out.headers, text: String(decoding: out.body, as: UTF8.self))
    }

    /// Signs in; returns the cookie header and the CSRF token.
    func signIn(_ token: String) throws -> (cookie: (String, String), csrf: (String, String)) {
        let r = call("POST", "/console/api/signin", body: #"{"token":"\#(token)"}"#)
        XCTAssertEqual(r.status, 200, r.text)
        let setCookie = try XCTUnwrap(r.header("set-cookie"))
        XCTAssertTrue(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict"), setCookie)
        XCTAssertFalse(setCookie.contains("Secure"), "plain HTTP listener")
        let id = String(setCookie.split(separator: ";")[0])
        guard case .string(let csrf)? = r.json?["csrfToken"] else {
            XCTFail("no csrf token")
            throw CancellationError()
        }
        return (("cookie", id), ("x-csrf-token", csrf))
    }

    func testPagesCarryAStrictContentSecurityPolicy() {
        let r = call("GET", "/console/")
        XCTAssertEqual(r.status, 200)
        XCTAssertTrue(r.text.contains("<script src=\"console.js\""))
        XCTAssertFalse(r.text.contains("<script>"), "no inline script")
        XCTAssertTrue(r.header("content-security-policy")!.contains("script-src 'self'"))
        XCTAssertEqual(r.header("x-frame-options"), "DENY")
        XCTAssertEqual(r.header("x-content-type-options"), "nosniff")
        XCTAssertEqual(call("GET", "/console/console.js").header("content-type"), "text/javascript; charset=utf-8")
        XCTAssertEqual(call("GET", "/console").status, 308)
        XCTAssertEqual(call("GET", "/console/nope.js").status, 404)
        XCTAssertEqual(call("POST", "/console/", body: "{}").status, 405)
    }

    func testSignInSessionAndSignOut() throws {
        XCTAssertEqual(call("GET", "/console/api/session").status, 401)
        XCTAssertEqual(call("POST", "/console/api/signin", body: #"{"token":"wrong-token-000000"}"#).status, 401)
        XCTAssertEqual(call("POST", "/console/api/signin", body: #"{}"#).status, 400)
        let (cookie, csrf) = try signIn("rw-token-0123456789")
        let s = call("GET", "/console/api/session", headers: [cookie])
        XCTAssertEqual(s.status, 200)
        XCTAssertEqual(
            s.json?["databases"]?.serialized, #"[{"name":"default","id":"\#(store.databaseId)","readOnly":false}]"#)
        XCTAssertEqual(
            call("POST", "/console/api/signout", body: "{}", headers: [cookie]).status, 403, "CSRF token required")
        let out = call("POST", "/console/api/signout", body: "{}", headers: [cookie, csrf])
        XCTAssertEqual(out.status, 200)
        XCTAssertTrue(out.header("set-cookie")!.contains("Max-Age=0"))
        XCTAssertEqual(call("GET", "/console/api/session", headers: [cookie]).status, 401)
    }

    func testRepeatedFailedSignInsGet429() {
        for _ in 0..<2 {
            XCTAssertEqual(
                call("POST", "/console/api/signin", body: #"{"token":"nope-nope-nope"}"#, remote: "10.9.9.9").status,
                401)
        }
        let r = call("POST", "/console/api/signin", body: #"{"token":"rw-token-0123456789"}"#, remote: "10.9.9.9")
        XCTAssertEqual(r.status, 429, "even the right token waits once the address is throttled")
        XCTAssertNotNil(r.header("retry-after"))
        XCTAssertEqual(
            call("POST", "/console/api/signin", body: #"{"token":"rw-token-0123456789"}"#, remote: "10.0.0.2").status,
            200)
    }

    func testChangesNeedCSRFTokenJSONAndSameOrigin() throws {
        let (cookie, csrf) = try signIn("rw-token-0123456789")
        let body = #"{"keyJson":"[\"a\"]","type":"string","value":"x","expect":null}"#
        XCTAssertEqual(call("POST", "/console/api/set", body: body, headers: [cookie]).status, 403)
        XCTAssertEqual(
            call("POST", "/console/api/set", body: body, headers: [cookie, ("x-csrf-token", "0" + csrf.1.dropFirst())])
                .status, 403)
        XCTAssertEqual(
            call("POST", "/console/api/set", body: body, headers: [cookie, csrf, ("origin", "http://evil.example")])
                .status, 403)
        XCTAssertEqual(
            call("POST", "/console/api/set", body: body, headers: [cookie, csrf, ("sec-fetch-site", "cross-site")])
                .status, 403)
        XCTAssertEqual(
            call(
                "POST", "/console/api/set", body: body,
                headers: [
                    cookie, csrf, ("origin", "http://127.0.0.1:4512"),
                    ("sec-fetch-site", "same-origin")
                ]
            ).status, 200)
        XCTAssertEqual(
            try store.readKeys([KeyCodec.encode([.string("a")])])[0].map { InspectFormatter.inspect($0.value) }, #""x""#
        )
        XCTAssertEqual(call("GET", "/console/api/set", headers: [cookie, csrf]).status, 405)
    }

    func testSetWithConflictDeleteAndDeletePrefix() throws {
        let (cookie, csrf) = try signIn("rw-token-0123456789")
        let created = call(
            "POST", "/console/api/set",
            body: #"{"keyJson":"[\"u\", 1]","type":"json","value":"{\"n\": 1}","expect":null}"#, headers: [cookie, csrf]
        )
        XCTAssertEqual(created.status, 200, created.text)
        guard case .string(let v1)? = created.json?["versionstamp"] else { return XCTFail(created.text) }
        let id = KeyPresentation.id(KeyCodec.encode([.string("u"), .number(1)]))
        // Someone else writes meanwhile.
        let other = try store.atomicWriteSync(
            AtomicWrite(mutations: [
                Mutation(
                    key: KeyCodec.encode([.string("u"), .number(1)]),
                    kind: .set(ValuePresentation.value(type: "string", text: "theirs")))
            ]))
        guard case .committed = other else { return XCTFail() }
        let conflict = call(
            "POST", "/console/api/set", body: #"{"key":"\#(id)","type":"string","value":"mine","expect":"\#(v1)"}"#,
            headers: [cookie, csrf])
        XCTAssertEqual(conflict.status, 409)
        XCTAssertEqual(conflict.json?["entry"]?["text"]?.serialized, #""\"theirs\"""#, "the new value comes back")
        XCTAssertEqual(
            call(
                "POST", "/console/api/set", body: #"{"key":"\#(id)","type":"string","value":"mine"}"#,
                headers: [cookie, csrf]
            ).status, 400, "the check is required")
        // Entry view, listing with cursor.
        for i in 2...4 {
            XCTAssertEqual(
                call(
                    "POST", "/console/api/set",
                    body: #"{"keyJson":"[\"u\", \#(i)]","type":"number","value":"\#(i)","expect":null}"#,
                    headers: [cookie, csrf]
                ).status, 200)
        }
        let prefix = KeyPresentation.id(KeyCodec.encode([.string("u")]))
        let page1 = call("GET", "/console/api/list", query: "prefix=\(prefix)&limit=3", headers: [cookie])
        XCTAssertEqual(page1.status, 200)
        guard case .array(let e1)? = page1.json?["entries"], case .string(let cursor)? = page1.json?["cursor"] else {
            return XCTFail(page1.text)
        }
        XCTAssertEqual(e1.count, 3)
        XCTAssertEqual(e1[0]["key"]?["text"]?.serialized, #""[ \"u\", 1 ]""#)
        let page2 = call(
            "GET", "/console/api/list", query: "prefix=\(prefix)&limit=3&cursor=\(cursor)", headers: [cookie])
        guard case .array(let e2)? = page2.json?["entries"] else { return XCTFail(page2.text) }
        XCTAssertEqual(e2.map { $0["text"]!.serialized }, [#""4""#])
        XCTAssertEqual(page2.json?["cursor"]?.serialized, "null")
        // Delete prefix: the count must be the confirmed one.
        XCTAssertEqual(
            call("GET", "/console/api/count", query: "prefix=\(prefix)", headers: [cookie]).json?["count"]?.serialized,
            "4")
        XCTAssertEqual(
            call(
                "POST", "/console/api/delete-prefix", body: #"{"prefix":"\#(prefix)","count":3}"#,
                headers: [cookie, csrf]
            ).status, 409)
        let del = call(
            "POST", "/console/api/delete-prefix", body: #"{"prefix":"\#(prefix)","count":4}"#, headers: [cookie, csrf])
        XCTAssertEqual(del.json?["deleted"]?.serialized, "4", del.text)
        XCTAssertEqual(try store.snapshotRead([ReadRange(start: [], end: [0xFF], limit: 10)])[0].count, 0)
    }

    func testReadOnlyTokenCannotChangeAnything() throws {
        let (cookie, csrf) = try signIn("ro-token-0123456789")
        XCTAssertEqual(
            call("GET", "/console/api/session", headers: [cookie]).json?["databases"]?.serialized.contains(
                #""readOnly":true"#), true)
        XCTAssertEqual(call("GET", "/console/api/list", headers: [cookie]).status, 200)
        let r = call(
            "POST", "/console/api/set", body: #"{"keyJson":"[\"a\"]","type":"string","value":"x","expect":null}"#,
            headers: [cookie, csrf])
        XCTAssertEqual(r.status, 403)
        XCTAssertTrue(r.text.contains("read-only"))
        XCTAssertEqual(
            call("POST", "/console/api/delete-prefix", body: #"{"prefix":"","count":0}"#, headers: [cookie, csrf])
                .status, 403)
        XCTAssertEqual(try store.snapshotRead([ReadRange(start: [], end: [0xFF], limit: 10)])[0].count, 0)
    }

    func testTokenOpensOnlyItsDatabases() throws {
        let other = try SQLiteStore(path: dir.appendingPathComponent("other.sqlite3").path)
        defer { other.close() }
        let a = Tenant(name: "a", store: store, tokens: [AccessToken(secret: "shared-token-0123456789")])
        let b = Tenant(
            name: "b", store: other, tokens: [AccessToken(secret: "shared-token-0123456789", scope: .readOnly)])
        let c = Tenant(name: "c", store: other, tokens: [AccessToken(secret: "another-token-0123456789")])
        console = ConsoleService(
            tenants: [a, b, c], configuration: ConsoleConfiguration(), stats: nil, logger: Logger(label: "test"))
        let (cookie, csrf) = try signIn("shared-token-0123456789")
        let dbs = call("GET", "/console/api/session", headers: [cookie]).json?["databases"]?.serialized ?? ""
        XCTAssertTrue(
            dbs.contains(#""name":"a""#) && dbs.contains(#""name":"b""#) && !dbs.contains(#""name":"c""#), dbs)
        XCTAssertEqual(call("GET", "/console/api/list", query: "db=a", headers: [cookie]).status, 200)
        XCTAssertEqual(call("GET", "/console/api/list", query: "db=c", headers: [cookie]).status, 404)
        XCTAssertEqual(call("GET", "/console/api/list", headers: [cookie]).status, 404, "two databases: name one")
        let set = #"{"db":"DB","keyJson":"[\"k\"]","type":"string","value":"x","expect":null}"#
        XCTAssertEqual(
            call(
                "POST", "/console/api/set", body: set.replacingOccurrences(of: "DB", with: "b"), headers: [cookie, csrf]
            )
            .status, 403, "read-only in b")
        XCTAssertEqual(
            call(
                "POST", "/console/api/set", body: set.replacingOccurrences(of: "DB", with: "a"), headers: [cookie, csrf]
            )
            .status, 200)
    }

    func testSessionCookieIsSecureUnderTLS() {
        var c = ConsoleConfiguration()
        c.secureCookies = true
        console = ConsoleService(
            tenants: [Tenant(store: store, tokens: [AccessToken(secret: "rw-token-0123456789")])], configuration: c,
            stats: nil, logger: Logger(label: "test"))
        let r = call("POST", "/console/api/signin", body: #"{"token":"rw-token-0123456789"}"#)
        let cookie = r.header("set-cookie") ?? ""
        XCTAssertTrue(
            cookie.hasSuffix("; Secure") && cookie.contains("HttpOnly") && cookie.contains("Path=/console/"), cookie)
    }
}
