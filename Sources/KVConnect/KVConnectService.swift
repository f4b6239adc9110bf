import Crypto
import Foundation
import KVEngine
import Logging
import Metrics

public struct ServiceConfiguration: Sendable {
    public var tokenLifetimeSeconds: Int64 = 3600
    /// Base URL for version-1 clients' absolute endpoint URLs; nil = derive
    /// from the request's Host (or :authority).
    public var publicBaseURL: String?
    public var endpointPath = "/v2"
    /// Keep-alive ping (an empty frame) on watch streams; also bounds how
    /// long a vanished client's watch lingers.
    public var watchPingIntervalMs = 5000
    /// Pings per second at most over all watch streams; past
    /// `watchPingIntervalMs` × this many streams, intervals stretch (50,000
    /// streams: 25 s). See `WatchPinger` for why.
    public var watchPingsPerSecondMax = 2000
    /// Pull queue: default lease (visibility timeout) and the longest long-poll.
    public var queueVisibilityTimeoutMs: Int64 = 30_000
    public var queueLongPollMaxMs: Int64 = 20_000
    public var limits = ProtocolLimits()
    /// `GET /metrics` body (Prometheus text), rendered by the executable; nil = 404.
    public var metricsText: (@Sendable () -> String)?
    /// Backend for request metrics; nil = the bootstrapped `MetricsSystem.factory`.
    public var metricsFactory: (any MetricsFactory)?

    public init() {}
}

/// Dispatches every request (either HTTP version), resolved to an `Endpoint`,
/// to the metadata exchange, the data path, the queue endpoints or the health
/// checks, and turns every failure into a status and a plain-text reason.
public final class KVConnectService: Sendable {
    let tenants: [Tenant]
    private let keyring: SigningKeyring
    private let verifiedTokens = VerifiedTokenCache()
    private let pinger: WatchPinger
    let config: ServiceConfiguration
    private let codec: WireCodec
    let logger: Logger
    let observer: RequestObserver
    /// The paths this service answers.
    public let routes: RouteTable
    /// Token expiry, enqueue deadlines, queue administration: every time this
    /// layer decides with.
    let clock: WallClock

    public convenience init(
        tenants: [Tenant], signer: TokenSigner, configuration: ServiceConfiguration, logger: Logger,
        clock: WallClock = .system
    ) {
        self.init(
            tenants: tenants, keyring: SigningKeyring(default: signer), configuration: configuration,
            logger: logger, clock: clock)
    }

    public init(
        tenants: [Tenant], keyring: SigningKeyring, configuration: ServiceConfiguration, logger: Logger,
        clock: WallClock = .system
    ) {
        self.tenants = tenants
        self.clock = clock
        self.routes = RouteTable(endpointPath: configuration.endpointPath)
        self.keyring = keyring
        self.config = configuration
        self.codec = WireCodec(limits: configuration.limits)
        self.pinger = WatchPinger(
            intervalMs: configuration.watchPingIntervalMs,
            maxPerSecond: configuration.watchPingsPerSecondMax)
        self.logger = logger
        self.observer = RequestObserver(factory: configuration.metricsFactory ?? MetricsSystem.factory, logger: logger)
    }

    /// May answer inline (reads, errors) or later from the engine's writer
    /// thread (atomic writes); never blocks on a write. Resolves the route
    /// itself; the front's adapter resolves it first and calls
    /// `handle(_:route:respond:)`.
    public func handle(_ request: ProtocolRequest, respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        handle(request, route: routes.resolve(method: request.method, path: request.path), respond: respond)
    }

    /// `route`: what `routes.resolve` made of the request's method and path.
    public func handle(
        _ request: ProtocolRequest, route: Route,
        respond: @escaping @Sendable (ProtocolResponse) -> Void
    ) {
        let respond = observer.wrap(request, endpoint: route.endpoint, respond)
        let endpoint: Endpoint
        switch route {
        case .endpoint(let e): endpoint = e
        case .methodNotAllowed(_, let allow): return respond(methodNotAllowed(request, allow: allow))
        case .notFound: return respond(.text(404, "not found: \(request.path)"))
        }
        switch endpoint {
        case .metadataExchange(let replica): respond(metadataExchange(request, replicaHandle: replica))
        case .snapshotRead(let replica): respond(snapshotRead(request, eventual: replica))
        case .atomicWrite: atomicWrite(request, respond: respond)
        case .watch: respond(watch(request))
        case .queueLease, .queueAck, .queueFail: queueEndpoint(request, endpoint, respond: respond)
        case .queueAdmin: queueAdmin(request, respond: respond)
        case .health: respond(.text(200, "ok"))
        case .ready: respond(readiness())
        case .metrics: respond(metricsEndpoint())
        }
    }

    // MARK: control plane

    /// `replicaHandle`: the exchange at `/replica`, whose only endpoint reads
    /// from the replica (see ReplicaEndpoint).
    private func metadataExchange(_ request: ProtocolRequest, replicaHandle: Bool = false) -> ProtocolResponse {
        guard let presented = bearerToken(request) else {
            return .text(401, "missing access token: send 'Authorization: Bearer <access token>'")
        }
        let digest = Array(SHA256.hash(data: Array(presented.utf8)))
        var match: (Tenant, DataPlaneToken.Scope)?
        for t in tenants {
            if let scope = t.scope(forPresented: digest), match == nil { match = (t, scope) }
        }
        guard let (tenant, scope) = match else {
            return .text(401, "invalid access token")
        }
        if replicaHandle && tenant.replica == nil {
            return .text(404, "database \(tenant.databaseId) has no replica: set replica_database to serve /replica")
        }
        let version: Int
        do { version = try MetadataExchange.negotiateVersion(body: request.body) } catch { return .error(error) }
        let expires = clock.nowMs() + config.tokenLifetimeSeconds * 1000
        let token = keyring.sign(DataPlaneToken(databaseId: tenant.databaseId, expiresAtMs: expires, scope: scope))
        let replicaPath = routes.replicaEndpointPath
        let body = MetadataExchange.responseBody(
            version: version, databaseId: tenant.databaseId,
            endpointPath: replicaHandle ? replicaPath : routes.endpointPath,
            eventualEndpointPath: replicaHandle || tenant.replica == nil ? nil : replicaPath,
            baseURL: baseURL(request), token: token, expiresAtMs: expires)
        var r = ProtocolResponse(status: 200, headers: [("content-type", "application/json")], body: body)
        r.databaseId = tenant.databaseId
        return r
    }

    private func baseURL(_ request: ProtocolRequest) -> String {
        if let configured = config.publicBaseURL { return configured }
        // Both fronts give the host as `host` (HTTP/2's :authority included).
        let host = request.header("host") ?? "127.0.0.1"
        return "http://\(host)"
    }

    private func readiness() -> ProtocolResponse {
        for t in tenants where !t.store.checkWritable() {
            return ProtocolResponse.error(
                ProtocolError(status: 503, "not ready: database \(t.databaseId) is not writable", retryAfterSeconds: 1))
        }
        return .text(200, "ready")
    }

    /// `GET /metrics`: the text the executable's exporter renders
    /// (Prometheus exposition format 0.0.4); 404 when none is configured.
    private func metricsEndpoint() -> ProtocolResponse {
        guard let render = config.metricsText else { return .text(404, "not found: /metrics (metrics are disabled)") }
        return ProtocolResponse(
            status: 200, headers: [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            body: Array(render().utf8))
    }

    // MARK: data path

    /// `json`: the queue endpoints take JSON bodies instead of protobuf.
    func authorize(_ request: ProtocolRequest, json: Bool = false) throws(ProtocolError) -> (Tenant, DataPlaneToken) {
        guard let presented = bearerToken(request) else {
            throw .unauthorized(
                "missing data-plane token: send 'Authorization: Bearer <token from the metadata exchange>'")
        }
        let token: DataPlaneToken
        do {
            token = try verifiedTokens.verify(presented, nowMs: clock.nowMs(), keyring: keyring)
        } catch .expired {
            throw .unauthorized("data-plane token expired: redo the metadata exchange")
        } catch {
            throw .unauthorized("invalid data-plane token")
        }
        let claimed = request.header("x-denokv-database-id") ?? request.header("x-transaction-domain-id")
        if let claimed, claimed.lowercased() != token.databaseId {
            throw .unauthorized("data-plane token is not valid for database \(claimed)")
        }
        guard let tenant = tenants.first(where: { $0.databaseId == token.databaseId }) else {
            throw .unauthorized("data-plane token names an unknown database")
        }
        // The queue endpoints read JSON whatever the label (curl -d sends a form type).
        if !json, let type = request.header("content-type"), !Self.isProtobufMediaType(type) {
            throw ProtocolError(
                status: 415, "unsupported content type '\(type)': the data path takes application/x-protobuf")
        }
        return (tenant, token)
    }

    /// `eventual`: the replica endpoint (see ReplicaEndpoint).
    private func snapshotRead(_ request: ProtocolRequest, eventual: Bool = false) -> ProtocolResponse {
        do {
            let (tenant, _) = try authorize(request)
            let ranges = try codec.decodeSnapshotRead(request.body)
            let results: [[KVEntry]]
            do {
                results =
                    eventual
                    ? try ReplicaEndpoint.read(ranges, tenant: tenant)
                    : try tenant.store.snapshotRead(ranges)
            } catch let e as KVError { throw ProtocolError(e) }
            return .protobuf(codec.encodeSnapshotReadOutput(results, stronglyConsistent: !eventual))
        } catch let e as ProtocolError {
            return .error(e)
        } catch {
            return .error(ProtocolError(status: 500, "internal error: \(error)", retryAfterSeconds: 1))
        }
    }

    private func atomicWrite(_ request: ProtocolRequest, respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        let tenant: Tenant, write: AtomicWrite
        do {
            let (t, token) = try authorize(request)
            if token.scope == .readOnly {
                throw ProtocolError(status: 403, "this token is read-only: atomic_write is not allowed")
            }
            tenant = t
            write = try codec.decodeAtomicWrite(request.body, nowMs: clock.nowMs())
        } catch let e as ProtocolError {
            return respond(.error(e))
        } catch {
            return respond(.error(ProtocolError(status: 500, "internal error: \(error)", retryAfterSeconds: 1)))
        }
        let codec = self.codec
        tenant.store.atomicWrite(write) { result in
            switch result {
            case .success(let r): respond(.protobuf(codec.encodeAtomicWriteOutput(r)))
            case .failure(let e): respond(.error(ProtocolError(e)))
            }
        }
    }

    private func watch(_ request: ProtocolRequest) -> ProtocolResponse {
        let tenant: Tenant, keys: [Bytes]
        do throws(ProtocolError) {
            (tenant, _) = try authorize(request)
            keys = try codec.decodeWatch(request.body)
        } catch {
            return .error(error)
        }
        let codec = self.codec, logger = self.logger
        let pinger = self.pinger
        var r = ProtocolResponse(status: 200, headers: [("content-type", "application/octet-stream")])
        r.stream = { stream in
            WatchSession(
                store: tenant.store, reads: tenant.watchReads, keys: keys, stream: stream, codec: codec,
                pinger: pinger, logger: logger
            ).start()
        }
        return r
    }

    // MARK: helpers

    func bearerToken(_ request: ProtocolRequest) -> String? {
        guard let auth = request.header("authorization") else { return nil }
        // Byte-level parsing: Foundation's trimming showed up in the profile.
        let bytes = Array(auth.utf8)
        guard bytes.count > 7, bytes[6] == 0x20,
            String(decoding: bytes[0..<6], as: UTF8.self).lowercased() == "bearer"
        else { return nil }
        var lo = 7, hi = bytes.count
        while lo < hi && (bytes[lo] == 0x20 || bytes[lo] == 0x09) { lo += 1 }
        while hi > lo && (bytes[hi - 1] == 0x20 || bytes[hi - 1] == 0x09) { hi -= 1 }
        return lo < hi ? String(decoding: bytes[lo..<hi], as: UTF8.self) : nil
    }

    private static let protobufMediaTypes: [[UInt8]] = [
        "application/x-protobuf", "application/protobuf",
        "application/octet-stream"
    ].map { Array($0.utf8) }

    /// The media type before any ";parameters", without surrounding blanks,
    /// compared case-insensitively. Byte-level: this runs on every request and
    /// Foundation's trimming showed up in the profile.
    static func isProtobufMediaType(_ value: String) -> Bool {
        var utf8 = value.utf8[...]
        if let semi = utf8.firstIndex(of: UInt8(ascii: ";")) { utf8 = utf8[..<semi] }
        let blank: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 }
        while let f = utf8.first, blank(f) { utf8 = utf8.dropFirst() }
        while let l = utf8.last, blank(l) { utf8 = utf8.dropLast() }
        return protobufMediaTypes.contains { known in
            known.count == utf8.count
                && zip(known, utf8).allSatisfy { $0 == ($1 | (($1 >= 0x41 && $1 <= 0x5A) ? 0x20 : 0)) }
        }
    }

    func methodNotAllowed(_ request: ProtocolRequest, allow: String) -> ProtocolResponse {
        var r = ProtocolResponse.text(
            405, "method \(request.method) not allowed on \(request.path) (allowed: \(allow))")
        r.headers.append(("allow", allow))
        return r
    }
}
