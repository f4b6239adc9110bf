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
    let url: URL
    private let secret: SymmetricKey
    let timeoutMs: Int
    let databaseId: String
    private let session: URLSession
    private let logger: Logger

    init(url: URL, secret: [UInt8], timeoutMs: Int, databaseId: String, concurrency: Int, logger: Logger) {
        self.url = url
        self.secret = SymmetricKey(data: secret)
        self.timeoutMs = timeoutMs
        self.databaseId = databaseId
        self.logger = logger
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = Double(timeoutMs) / 1000
        config.timeoutIntervalForResource = Double(timeoutMs) / 1000
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

    func deliver(_ m: QueueMessage, done: @escaping @Sendable (Bool) -> Void) {
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
