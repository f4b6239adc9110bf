// The web console: static page + JSON API under /console/, served by the
// daemon itself. Data access goes only through the storage protocol on the
// tenant's store, so every change is an ordinary atomic write (checks,
// watchers woken, versionstamps) exactly as from a Deno client.

import Crypto
import Dispatch
import Foundation
import KVConnect
import KVEngine
import Logging

public struct ConsoleConfiguration: Sendable {
    /// Where the console lives (no trailing slash).
    public var basePath = "/console"
    /// Secure flag on the session cookie (set when the listener speaks TLS).
    public var secureCookies = false
    public var serverVersion = ""
    public var sessionIdleSeconds: Double = 1800
    public var sessionMaxSeconds: Double = 12 * 3600
    /// Every failed sign-in is answered this late; after `maxFailedSignIns`
    /// within the window the address gets 429 until the window passes.
    public var failedSignInDelayMs = 1000
    public var maxFailedSignIns = 5
    public var failedSignInWindowSeconds: Double = 300
    /// Keys one "delete prefix" may remove.
    public var maxPrefixDelete = 100_000
    public var limits = ProtocolLimits()
    public init() {}
}

public struct ConsoleRequest: Sendable {
    public var method: String
    public var path: String
    public var query: String?
    /// Lower-cased names.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    public var remoteAddress: String

    public init(
        method: String, path: String, query: String?, headers: [(name: String, value: String)],
        body: [UInt8], remoteAddress: String
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.remoteAddress = remoteAddress
    }

    func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }

    func param(_ name: String) -> String? {
        guard let query else { return nil }
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if kv[0] == name {
                let v = kv.count > 1 ? String(kv[1]) : ""
                return v.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? v
            }
        }
        return nil
    }
}

public final class ConsoleService: Sendable {
    public static let sessionCookie = "kvconsole_session"
    let tenants: [Tenant]
    let config: ConsoleConfiguration
    let logger: Logger
    let sessions: SessionStore
    let throttle: SignInThrottle
    let history: StatsHistory?
    /// storageStats() per database, at most every 10 s (counting entries can
    /// scan a table; the Server tab polls every 2 s).
    private let statsCache = StatsCache(ttlSeconds: 10)
    let startedAt = Date().timeIntervalSince1970

    public init(
        tenants: [Tenant], configuration: ConsoleConfiguration, stats: (any ConsoleServerStats)?, logger: Logger
    ) {
        self.tenants = tenants
        self.config = configuration
        self.logger = logger
        sessions = SessionStore(
            idleSeconds: configuration.sessionIdleSeconds, maxSeconds: configuration.sessionMaxSeconds)
        throttle = SignInThrottle(
            maxFailures: configuration.maxFailedSignIns,
            windowSeconds: configuration.failedSignInWindowSeconds)
        history = stats.map { StatsHistory(source: $0) }
        history?.start()
    }

    deinit { history?.stop() }

    /// True for paths this service answers.
    public func owns(_ path: String) -> Bool {
        path == config.basePath || path.hasPrefix(config.basePath + "/")
    }

    public func handle(_ request: ConsoleRequest, respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        let respond: @Sendable (ProtocolResponse) -> Void = { r in
            var r = r
            r.headers += RequestGuard.securityHeaders
            respond(r)
        }
        let sub = String(request.path.dropFirst(config.basePath.count))
        if sub.isEmpty {
            var r = ProtocolResponse(status: 308, headers: [("location", config.basePath + "/")])
            r.body = Array("moved to \(config.basePath)/\n".utf8)
            return respond(r)
        }
        if let asset = ConsoleAssets.file(sub) {
            guard request.method == "GET" || request.method == "HEAD" else {
                return respond(notAllowed(request, "GET, HEAD"))
            }
            return respond(
                ProtocolResponse(status: 200, headers: [("content-type", asset.contentType)], body: asset.bytes))
        }
        guard sub.hasPrefix("/api/") else { return respond(.text(404, "not found: \(request.path)")) }
        let route = String(sub.dropFirst(5))
        let reads = ["session", "list", "entry", "count", "events", "queue", "server"]
        let writes = ["signin", "signout", "set", "delete", "delete-prefix"]
        if reads.contains(route) {
            guard request.method == "GET" else { return respond(notAllowed(request, "GET")) }
        } else if writes.contains(route) {
            guard request.method == "POST" else { return respond(notAllowed(request, "POST")) }
            if let reason = RequestGuard.crossSiteReason(request.header) { return respond(.text(403, reason)) }
            guard RequestGuard.isJSON(request.header("content-type")) else {
                return respond(.text(415, "console changes take application/json"))
            }
        } else {
            return respond(.text(404, "not found: \(request.path)"))
        }
        if route == "signin" { return signIn(request, respond) }

        guard let id = RequestGuard.cookie(Self.sessionCookie, in: request.header("cookie")),
            let session = sessions.lookup(id)
        else {
            return respond(.text(401, "not signed in (or the session expired): sign in with an access token"))
        }
        let dbs = databases(for: session)
        guard !dbs.isEmpty else {
            sessions.remove(session.id)
            return respond(.text(401, "the access token of this session is no longer valid: sign in again"))
        }
        if writes.contains(route) {
            guard RequestGuard.tokensMatch(request.header("x-csrf-token"), session.csrfToken) else {
                return respond(.text(403, "missing or wrong x-csrf-token: reload the console"))
            }
        }
        switch route {
        case "session": return respond(json(sessionJSON(session, dbs)))
        case "signout":
            sessions.remove(session.id)
            var r = json(.object([("signedOut", .bool(true))]))
            r.headers.append(("set-cookie", cookie(value: "", maxAge: 0)))
            return respond(r)
        default: break
        }

        // Everything else works on one database.
        var body: JSONValue = .null
        if request.method == "POST" {
            guard let b = try? JSONValue.parse(String(decoding: request.body, as: UTF8.self)), case .object = b else {
                return respond(.text(400, "request body must be a JSON object"))
            }
            body = b
        }
        let dbName: String? = request.method == "POST" ? body["db"].flatMap(Self.string) : request.param("db")
        guard let (tenant, scope) = pick(dbName, from: dbs) else {
            return respond(.text(404, "no database '\(dbName ?? "")' for this access token"))
        }
        if writes.contains(route) && scope == .readOnly {
            return respond(.text(403, "this access token is read-only: the console cannot change data"))
        }
        let api = ConsoleAPI(service: self, store: tenant.store, tenant: tenant)
        switch route {
        case "list": respond(api.list(request))
        case "entry": respond(api.entry(request))
        case "count": respond(api.count(request))
        case "events":
            let sessionId = session.id, tenantName = tenant.name
            respond(
                api.events(request) { [weak self] in
                    guard let self, let s = self.sessions.peek(sessionId) else { return false }
                    return self.databases(for: s).contains { $0.0.name == tenantName }
                })
        case "queue": respond(api.queue())
        case "server": respond(api.server())
        case "set": api.set(body, respond)
        case "delete": api.delete(body, respond)
        case "delete-prefix": api.deletePrefix(body, respond)
        default: respond(.text(404, "not found: \(request.path)"))
        }
    }

    // MARK: sign-in

    private func signIn(_ request: ConsoleRequest, _ respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        let address = request.remoteAddress.isEmpty ? "unknown" : request.remoteAddress
        if let wait = throttle.retryAfter(address) {
            var r = ProtocolResponse.text(429, "too many failed sign-ins from this address: try again in \(wait) s")
            r.headers.append(("retry-after", String(wait)))
            return respond(r)
        }
        guard let body = try? JSONValue.parse(String(decoding: request.body, as: UTF8.self)),
            let token = body["token"].flatMap(Self.string), !token.isEmpty
        else {
            return respond(.text(400, "send {\"token\": \"<access token>\"}"))
        }
        let digest = Array(SHA256.hash(data: Array(token.utf8)))
        let probe = ConsoleSession(id: "", csrfToken: "", tokenDigest: digest, createdAt: 0, lastUsed: 0)
        let dbs = databases(for: probe)
        guard !dbs.isEmpty else {
            throttle.recordFailure(address)
            logger.notice("console: failed sign-in", metadata: ["remote": "\(address)"])
            // Answer late: guessing tokens from one connection stays slow.
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(config.failedSignInDelayMs)) {
                respond(.text(401, "invalid access token"))
            }
            return
        }
        throttle.recordSuccess(address)
        let session = sessions.create(tokenDigest: digest)
        logger.info(
            "console: signed in",
            metadata: [
                "remote": "\(address)",
                "databases": "\(dbs.map(\.0.name).joined(separator: ","))"
            ])
        var r = json(sessionJSON(session, dbs))
        r.headers.append(("set-cookie", cookie(value: session.id, maxAge: Int(config.sessionMaxSeconds))))
        respond(r)
    }

    private func cookie(value: String, maxAge: Int) -> String {
        "\(Self.sessionCookie)=\(value); Path=\(config.basePath)/; Max-Age=\(maxAge); HttpOnly; SameSite=Strict"
            + (config.secureCookies ? "; Secure" : "")
    }

    /// The databases the session's token opens now, with its scope in each.
    func databases(for s: ConsoleSession) -> [(Tenant, DataPlaneToken.Scope)] {
        tenants.compactMap { t in t.scope(forPresented: s.tokenDigest).map { (t, $0) } }
    }

    private func pick(_ name: String?, from dbs: [(Tenant, DataPlaneToken.Scope)]) -> (Tenant, DataPlaneToken.Scope)? {
        guard let name, !name.isEmpty else { return dbs.count == 1 ? dbs[0] : nil }
        return dbs.first { $0.0.name == name }
    }

    private func sessionJSON(_ s: ConsoleSession, _ dbs: [(Tenant, DataPlaneToken.Scope)]) -> JSONValue {
        .object([
            ("csrfToken", .string(s.csrfToken)),
            ("serverVersion", .string(config.serverVersion)),
            (
                "databases",
                .array(
                    dbs.map { t, scope in
                        .object([
                            ("name", .string(t.name)), ("id", .string(t.databaseId)),
                            ("readOnly", .bool(scope == .readOnly))
                        ])
                    })
            )
        ])
    }

    func storageStats(_ tenant: Tenant) -> StorageStats? {
        statsCache.get(tenant.name) { try? tenant.store.storageStats() }
    }

    // MARK: helpers

    static func string(_ j: JSONValue) -> String? {
        if case .string(let s) = j { return s }
        return nil
    }

    func json(_ j: JSONValue, status: Int = 200) -> ProtocolResponse {
        ProtocolResponse(
            status: status, headers: [("content-type", "application/json; charset=utf-8")],
            body: Array(j.serialized.utf8))
    }

    func notAllowed(_ request: ConsoleRequest, _ allow: String) -> ProtocolResponse {
        var r = ProtocolResponse.text(
            405, "method \(request.method) not allowed on \(request.path) (allowed: \(allow))")
        r.headers.append(("allow", allow))
        return r
    }
}
