/// The request/response values of the protocol layer. The HTTP front maps its
/// own request type to these (one adapter for both HTTP versions), so this
/// layer knows nothing about sockets, libmicrohttpd or nghttp2.
public struct ProtocolRequest: Sendable {
    public var method: String
    public var path: String
    /// The query string (after '?'), if any; only the admin endpoints read it.
    public var query: String?
    /// Lower-cased header names.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(
        method: String, path: String, query: String? = nil, headers: [(name: String, value: String)],
        body: [UInt8]
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.name == name }?.value
    }
}

public struct ProtocolResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// Set for streaming responses: called once with the open stream after
    /// status and headers are sent; `body` is ignored.
    public var stream: (@Sendable (any ResponseStreamWriter) -> Void)?
    /// The database the handler served, for the request log; never sent.
    var databaseId: String?

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func text(_ status: Int, _ text: String) -> ProtocolResponse {
        ProtocolResponse(
            status: status, headers: [("content-type", "text/plain; charset=utf-8")],
            body: Array((text + "\n").utf8))
    }

    public static func error(_ e: ProtocolError) -> ProtocolResponse {
        var r = text(e.status, e.message)
        if let s = e.retryAfterSeconds { r.headers.append(("retry-after", String(s))) }
        return r
    }

    static func protobuf(_ body: [UInt8]) -> ProtocolResponse {
        ProtocolResponse(status: 200, headers: [("content-type", "application/x-protobuf")], body: body)
    }
}
