import Dispatch
import Foundation
import Logging
import Metrics
import Synchronization

/// Per-request metrics and the per-request debug log line, recorded where
/// `KVConnectService.handle` answers (one place for both HTTP versions).
///
/// Only the swift-metrics facade is used here; the executable bootstraps the
/// backend (Prometheus). Labels are small and bounded: the endpoint comes
/// from a fixed list (anything else is "other") and the status code. Tokens,
/// keys and client-chosen paths never become labels, and headers are never
/// logged.
final class RequestObserver: Sendable {
    static let requestsTotal = "kvconnectd_requests_total"
    static let requestDuration = "kvconnectd_request_duration_seconds"

    private let factory: any MetricsFactory
    private let logger: Logger
    private let endpointPath: String
    private let nextId = Atomic<UInt64>(0)
    private let counters = Mutex<[String: Counter]>([:])
    private let timers = Mutex<[String: Metrics.Timer]>([:])

    init(factory: any MetricsFactory, logger: Logger, endpointPath: String) {
        self.factory = factory
        self.logger = logger
        self.endpointPath = endpointPath
    }

    /// The bounded endpoint label for a request path.
    static func endpoint(path: String, endpointPath ep: String) -> String {
        switch path {
        case "/": return "metadata"
        case "/healthz": return "healthz"
        case "/readyz": return "readyz"
        case "/metrics": return "metrics"
        default: break
        }
        if path.hasPrefix("/admin/queue/") { return "queue_admin" }
        // Suffix match so per-database prefixes still map to the endpoint.
        for (suffix, name) in Self.dataEndpoints where path.hasSuffix(ep + suffix) {
            return name
        }
        return "other"
    }

    private static let dataEndpoints = [
        ("/snapshot_read", "snapshot_read"), ("/atomic_write", "atomic_write"), ("/watch", "watch"),
        ("/queue/lease", "queue_lease"), ("/queue/ack", "queue_ack"), ("/queue/fail", "queue_fail"),
    ]

    /// Wraps `respond`: counts the request by endpoint and status, records
    /// its latency (a watch: until the stream starts) and logs one debug line.
    func wrap(_ request: ProtocolRequest,
              _ respond: @escaping @Sendable (ProtocolResponse) -> Void) -> @Sendable (ProtocolResponse) -> Void {
        let start = DispatchTime.now().uptimeNanoseconds
        let endpoint = Self.endpoint(path: request.path, endpointPath: endpointPath)
        let id = nextId.add(1, ordering: .relaxed).newValue
        let method = request.method, path = request.path
        let claimedDatabase = request.header("x-denokv-database-id") ?? request.header("x-transaction-domain-id")
        return { [self] response in
            let elapsed = DispatchTime.now().uptimeNanoseconds &- start
            counter(endpoint: endpoint, status: response.status).increment()
            timer(endpoint: endpoint).recordNanoseconds(Int64(clamping: elapsed))
            log(id: id, method: method, path: path, endpoint: endpoint, claimedDatabase: claimedDatabase,
                response: response, elapsedNs: elapsed)
            var response = response
            response.headers.append(("x-request-id", String(id)))
            respond(response)
        }
    }

    private func counter(endpoint: String, status: Int) -> Counter {
        let key = "\(endpoint) \(status)"
        return counters.withLock { cache in
            if let c = cache[key] { return c }
            let c = Counter(label: Self.requestsTotal,
                            dimensions: [("endpoint", endpoint), ("status", String(status))], factory: factory)
            cache[key] = c
            return c
        }
    }

    private func timer(endpoint: String) -> Metrics.Timer {
        timers.withLock { cache in
            if let t = cache[endpoint] { return t }
            let t = Metrics.Timer(label: Self.requestDuration, dimensions: [("endpoint", endpoint)], factory: factory)
            cache[endpoint] = t
            return t
        }
    }

    private func log(id: UInt64, method: String, path: String, endpoint: String, claimedDatabase: String?,
                     response: ProtocolResponse, elapsedNs: UInt64) {
        let serverError = response.status >= 500
        guard serverError || logger.logLevel <= .debug else { return }
        var meta: Logger.Metadata = [
            "request_id": "\(id)",
            "method": "\(Self.clip(method, 16))",
            // Unrouted paths are client text (a misconfigured client may put a
            // secret there): only routed paths are logged.
            "path": "\(endpoint == "other" ? "(unrouted)" : Self.clip(path, 128))",
            "endpoint": "\(endpoint)",
            "status": "\(response.status)",
            "duration_ms": "\(String(format: "%.3f", Double(elapsedNs) / 1e6))",
        ]
        if let db = databaseId(endpoint: endpoint, claimed: claimedDatabase, response: response) {
            meta["database_id"] = "\(db)"
        }
        if serverError {
            // The reason is the server's own plain-text message (never a token).
            meta["reason"] = "\(Self.clip(String(decoding: response.body.prefix(512), as: UTF8.self), 300).trimmingCharacters(in: .whitespacesAndNewlines))"
            if response.status == 503 {
                logger.warning("request failed (retryable)", metadata: meta)
            } else {
                logger.error("request failed", metadata: meta)
            }
        } else {
            logger.debug("request", metadata: meta)
        }
    }

    /// The database a request was for, when known: the metadata exchange's
    /// answer, or (data path) the id the client named, which `authorize`
    /// checked against the signed token unless the answer is 401.
    private func databaseId(endpoint: String, claimed: String?, response: ProtocolResponse) -> String? {
        if endpoint == "metadata" {
            guard response.status == 200,
                  let o = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
            else { return nil }
            return o["databaseId"] as? String
        }
        guard Self.dataEndpoints.contains(where: { $0.1 == endpoint }), response.status != 401,
              let claimed, claimed.count <= 64,
              claimed.allSatisfy({ $0.isHexDigit || $0 == "-" })
        else { return nil }
        return claimed.lowercased()
    }

    private static func clip(_ s: String, _ n: Int) -> String {
        s.count <= n ? s : String(s.prefix(n)) + "…"
    }
}

extension KVConnectService {
    /// `GET /metrics`: the text the executable's exporter renders
    /// (Prometheus exposition format 0.0.4); 404 when none is configured.
    func metricsEndpoint(_ request: ProtocolRequest) -> ProtocolResponse {
        guard request.method == "GET" || request.method == "HEAD" else {
            return methodNotAllowed(request, allow: "GET, HEAD")
        }
        guard let render = config.metricsText else { return .text(404, "not found: /metrics (metrics are disabled)") }
        return ProtocolResponse(status: 200, headers: [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                                body: Array(render().utf8))
    }
}
