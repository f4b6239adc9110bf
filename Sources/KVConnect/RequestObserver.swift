import Dispatch
import Foundation
import Logging
import Metrics
import Synchronization

/// Per-request metrics and the per-request debug log line, recorded where
/// `KVConnectService.handle` answers (one place for both HTTP versions).
///
/// Only the swift-metrics facade is used here; the executable bootstraps the
/// backend (Prometheus). Labels are small and bounded: the resolved
/// endpoint's label (`Endpoint.metricLabel`; unrouted: "other") and the
/// status code. Tokens, keys and client-chosen paths never become labels,
/// and headers are never logged.
final class RequestObserver: Sendable {
    static let requestsTotal = "kvconnectd_requests_total"
    static let requestDuration = "kvconnectd_request_duration_seconds"

    private let factory: any MetricsFactory
    private let logger: Logger
    private let nextId = Atomic<UInt64>(0)
    private let counters = Mutex<[String: Counter]>([:])
    private let timers = Mutex<[String: Metrics.Timer]>([:])

    init(factory: any MetricsFactory, logger: Logger) {
        self.factory = factory
        self.logger = logger
    }

    /// Wraps `respond`: counts the request by endpoint (`nil`: unrouted) and
    /// status, records its latency (a watch: until the stream starts) and logs
    /// one debug line.
    func wrap(
        _ request: ProtocolRequest, endpoint: Endpoint?,
        _ respond: @escaping @Sendable (ProtocolResponse) -> Void
    ) -> @Sendable (ProtocolResponse) -> Void {
        let start = DispatchTime.now().uptimeNanoseconds
        let id = nextId.add(1, ordering: .relaxed).newValue
        let method = request.method, path = request.path
        let claimedDatabase = request.header("x-denokv-database-id") ?? request.header("x-transaction-domain-id")
        return { [self] response in
            let elapsed = DispatchTime.now().uptimeNanoseconds &- start
            let label = endpoint?.metricLabel ?? Endpoint.unroutedLabel
            counter(endpoint: label, status: response.status).increment()
            timer(endpoint: label).recordNanoseconds(Int64(clamping: elapsed))
            log(
                id: id, method: method, path: path, endpoint: endpoint, claimedDatabase: claimedDatabase,
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
            let c = Counter(
                label: Self.requestsTotal,
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

    private func log(
        id: UInt64, method: String, path: String, endpoint: Endpoint?, claimedDatabase: String?,
        response: ProtocolResponse, elapsedNs: UInt64
    ) {
        let serverError = response.status >= 500
        guard serverError || logger.logLevel <= .debug else { return }
        var meta: Logger.Metadata = [
            "request_id": "\(id)",
            "method": "\(Self.clip(method, 16))",
            // Unrouted paths are client text (a misconfigured client may put a
            // secret there): only routed paths are logged.
            "path": "\(endpoint == nil ? "(unrouted)" : Self.clip(path, 128))",
            "endpoint": "\(endpoint?.metricLabel ?? Endpoint.unroutedLabel)",
            "status": "\(response.status)",
            "duration_ms": "\(String(format: "%.3f", Double(elapsedNs) / 1e6))"
        ]
        if let db = databaseId(endpoint: endpoint, claimed: claimedDatabase, response: response) {
            meta["database_id"] = "\(db)"
        }
        if serverError {
            // The reason is the server's own plain-text message (never a token).
            meta["reason"] =
                "\(Self.clip(String(decoding: response.body.prefix(512), as: UTF8.self), 300).trimmingCharacters(in: .whitespacesAndNewlines))"
            if response.status == 503 {
                logger.warning("request failed (retryable)", metadata: meta)
            } else {
                logger.error("request failed", metadata: meta)
            }
        } else {
            logger.debug("request", metadata: meta)
        }
    }

    /// The database a request was for, when known: the one the handler
    /// served (the metadata exchange's answer), or (data path) the id the
    /// client named, which `authorize` checked against the signed token
    /// unless the answer is 401.
    private func databaseId(endpoint: Endpoint?, claimed: String?, response: ProtocolResponse) -> String? {
        if let served = response.databaseId { return served }
        guard let endpoint, endpoint.isDataPath, response.status != 401,
            let claimed, claimed.count <= 64,
            claimed.allSatisfy({ $0.isHexDigit || $0 == "-" })
        else { return nil }
        return claimed.lowercased()
    }

    private static func clip(_ s: String, _ n: Int) -> String {
        s.count <= n ? s : String(s.prefix(n)) + "…"
    }
}
