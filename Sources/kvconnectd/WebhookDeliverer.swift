import Crypto
import Foundation
import KVEngine
import Logging
import Synchronization

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
final class WebhookDeliverer: Sendable {
    /// URL, secret and timeout: replaced on SIGHUP, read once per delivery.
    private struct Target {
        var url: URL
        var secret: SymmetricKey
        var timeoutMs: Int
    }
    private let target: Mutex<Target>
    let databaseId: String
    private let client: CurlMultiClient
    private let logger: Logger

    init(url: URL, secret: [UInt8], timeoutMs: Int, databaseId: String, concurrency: Int, logger: Logger) throws {
        self.target = Mutex(Target(url: url, secret: SymmetricKey(data: secret), timeoutMs: timeoutMs))
        self.databaseId = databaseId
        self.logger = logger
        // One kept-alive connection per concurrent delivery.
        client = try CurlMultiClient(maxConnections: concurrency)
    }

    deinit { client.stop() }

    /// Ends the client thread; deliveries still running report a failed attempt.
    func stop() { client.stop() }

    /// "sha256=" + lower-case hex of HMAC-SHA256(key, "<id>." + body).
    static func signature(key: SymmetricKey, id: String, body: [UInt8]) -> String {
        var h = HMAC<SHA256>(key: key)
        h.update(data: Array((id + ".").utf8))
        h.update(data: body)
        return "sha256=" + hex(Array(h.finalize()))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
    private static func hex(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(hexDigits[Int(b >> 4)])
            out.append(hexDigits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// SIGHUP: new deliveries use the new URL, secret and timeout.
    func update(url: URL, secret: [UInt8], timeoutMs: Int) {
        target.withLock { $0 = Target(url: url, secret: SymmetricKey(data: secret), timeoutMs: timeoutMs) }
    }

    func deliver(_ m: QueueMessage, done: @escaping @Sendable (Bool) -> Void) {
        let t = target.withLock { $0 }
        let id = String(m.id)
        let attempt = m.attempt
        let logger = self.logger
        let headers = [
            "Content-Type: application/octet-stream",
            "x-kvconnectd-message-id: \(id)",
            "x-kvconnectd-attempt: \(attempt)",
            "x-kvconnectd-database-id: \(databaseId)",
            "x-kvconnectd-signature: \(Self.signature(key: t.secret, id: id, body: m.payload))",
            "Expect:"  // no 100-continue round trip before larger bodies
        ]
        // libcurl ends the transfer at the timeout, so every delivery reports back within it.
        client.post(
            .init(url: t.url.absoluteString, headers: headers, body: m.payload, timeoutMs: t.timeoutMs) {
                status, error in
                if let status, (200..<300).contains(status) {
                    logger.debug("queue: delivered", metadata: ["message_id": "\(id)", "attempt": "\(attempt)"])
                    done(true)
                } else {
                    logger.info(
                        "queue: delivery failed",
                        metadata: [
                            "message_id": "\(id)", "attempt": "\(attempt)",
                            "reason": "\(status.map { "status \($0)" } ?? error ?? "no response")"
                        ])
                    done(false)
                }
            })
    }
}
