/// What the handler answers: status, headers and a body, or a stream.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// A streaming response: when set, the front sends status and headers
    /// (no content-length), ignores `body`, and calls this once with the
    /// stream after the response is set up (on an I/O thread; it may write
    /// at once and must not block). It is always called exactly once, also
    /// when the client is already gone: then with a closed stream (writes
    /// return false, onClose handlers run immediately).
    public var stream: (@Sendable (HTTPResponseStream) -> Void)?

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = nil
    }

    /// A response whose body is produced over time through an `HTTPResponseStream`.
    public static func streaming(
        status: Int = 200, headers: [(name: String, value: String)],
        start: @escaping @Sendable (HTTPResponseStream) -> Void
    ) -> HTTPResponse {
        var r = HTTPResponse(status: status, headers: headers)
        r.stream = start
        return r
    }

    /// A plain-text response (errors, health checks).
    public static func text(
        _ status: Int, _ text: String,
        headers: [(name: String, value: String)] = []
    ) -> HTTPResponse {
        HTTPResponse(
            status: status,
            headers: [("content-type", "text/plain; charset=utf-8")] + headers,
            body: Array(text.utf8))
    }
}
