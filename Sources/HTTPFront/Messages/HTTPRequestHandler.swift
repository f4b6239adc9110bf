/// What the front calls for every complete request.
public protocol HTTPRequestHandler: Sendable {
    /// Called on a front I/O thread: must not block on writes. Call `respond`
    /// exactly once, either inline (before returning) or later from any thread.
    /// Long-lived bodies (watch streams): respond with `HTTPResponse.streaming`.
    func handle(_ request: HTTPRequest, respond: @escaping @Sendable (HTTPResponse) -> Void)
}
