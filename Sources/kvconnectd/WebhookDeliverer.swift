import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KVEngine
import Logging

/// Pushes queue messages to the configured webhook (docs/queues.md):
/// `POST` of the raw V8 payload (`application/octet-stream`) with
///
///     x-kvconnectd-message-id:   <id>        (stable across attempts)
///     x-kvconnectd-attempt:      <n>         (1 = first attempt)
///     x-kvconnectd-database-id:  <uuid>
///     x-kvconnectd-signature:    sha256=<hex HMAC-SHA256(secret, "<id>." + body)>
///
/// A 2xx within the timeout acknowledges; any other status, a timeout or a
/// connection error is a failed attempt.
final class WebhookDeliverer: @unchecked Sendable {
    /// URL, secret and timeout: replaced on SIGHUP, read once per delivery.
    private struct Target { var url: URL; var secret: SymmetricKey; var timeoutMs: Int }
    private let lock = NSLock()
    private var target: Target
    let databaseId: String
    private let session: URLSession
    private let logger: Logger

    init(url: URL, secret: [UInt8], timeoutMs: Int, databaseId: String, concurrency: Int, logger: Logger) {
        self.target = Target(url: url, secret: SymmetricKey(data: secret), timeoutMs: timeoutMs)
        self.databaseId = databaseId
        self.logger = logger
        let config = URLSessionConfiguration.ephemeral
        // Per-request timeouts (below) apply, so a reload can change them.
        config.timeoutIntervalForRequest = 3600
        config.timeoutIntervalForResource = 3600
        config.httpMaximumConnectionsPerHost = max(1, concurrency)
        config.requestCachePolicy = .reloadIgnoringLocalCacheData
        config.urlCache = nil
        config.httpCookieStorage = nil
        session = URLSession(configuration: config)
    }

    /// "sha256=" + lower-case hex of HMAC-SHA256(key, "<id>." + body).
    static func signature(key: SymmetricKey, id: String, body: [UInt8]) -> String {
        var h = HMAC<SHA256>(key: key)
        h.update(data: Array((id + ".").utf8))
        h.update(data: body)
        return "sha256=" + h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// SIGHUP: new deliveries use the new URL, secret and timeout.
    func update(url: URL, secret: [UInt8], timeoutMs: Int) {
        lock.lock()
        target = Target(url: url, secret: SymmetricKey(data: secret), timeoutMs: timeoutMs)
        lock.unlock()
    }

    func deliver(_ m: QueueMessage, done: @escaping @Sendable (Bool) -> Void) {
        lock.lock()
        let t = target
        lock.unlock()
        let url = t.url, secret = t.secret, timeoutMs = t.timeoutMs
        let id = String(m.id)
        var req = URLRequest(url: url)
        req.httpMethod = "POST"
        req.timeoutInterval = Double(timeoutMs) / 1000
        req.setValue("application/octet-stream", forHTTPHeaderField: "Content-Type")
        req.setValue(id, forHTTPHeaderField: "x-kvconnectd-message-id")
        req.setValue(String(m.attempt), forHTTPHeaderField: "x-kvconnectd-attempt")
        req.setValue(databaseId, forHTTPHeaderField: "x-kvconnectd-database-id")
        req.setValue(Self.signature(key: secret, id: id, body: m.payload), forHTTPHeaderField: "x-kvconnectd-signature")
        req.httpBody = Data(m.payload)
        let once = OnceFlag()
        let logger = self.logger
        let attempt = m.attempt
        let task = session.dataTask(with: req) { _, response, error in
            guard once.claim() else { return }
            let status = (response as? HTTPURLResponse)?.statusCode
            if let status, (200..<300).contains(status) {
                logger.debug("queue: delivered", metadata: ["message_id": "\(id)", "attempt": "\(attempt)"])
                done(true)
            } else {
                logger.info("queue: delivery failed", metadata: [
                    "message_id": "\(id)", "attempt": "\(attempt)",
                    "reason": "\(status.map { "status \($0)" } ?? String(describing: error.map { $0.localizedDescription } ?? "no response"))",
                ])
                done(false)
            }
        }
        task.resume()
        // Our own deadline, so a delivery always reports back within the timeout.
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(timeoutMs + 200)) {
            guard once.claim() else { return }
            task.cancel()
            logger.info("queue: delivery timed out", metadata: ["message_id": "\(id)", "attempt": "\(attempt)"])
            done(false)
        }
    }
}
