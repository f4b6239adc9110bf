import KVEngine

/// A request the protocol layer refuses, with the HTTP status and the
/// plain-text reason the client will show (Deno prints the body verbatim).
public struct ProtocolError: Error, Equatable, Sendable {
    public var status: Int
    public var message: String
    /// Seconds for a Retry-After header on retryable (5xx) errors.
    public var retryAfterSeconds: Int?

    public init(status: Int, _ message: String, retryAfterSeconds: Int? = nil) {
        self.status = status
        self.message = message
        self.retryAfterSeconds = retryAfterSeconds
    }

    static func badRequest(_ message: String) -> ProtocolError { ProtocolError(status: 400, message) }
    static func unauthorized(_ message: String) -> ProtocolError { ProtocolError(status: 401, message) }

    /// Engine failures: the client's fault is a 400; storage trouble a 503
    /// (clients retry 5xx forever, so only conditions a retry can cure).
    public init(_ error: KVError) {
        switch error {
        case .invalidMutation(let text): self.init(status: 400, text)
        case .unavailable(let text): self.init(status: 503, text, retryAfterSeconds: 1)
        case .internalError(let text): self.init(status: 500, "internal error: \(text)", retryAfterSeconds: 1)
        }
    }
}
