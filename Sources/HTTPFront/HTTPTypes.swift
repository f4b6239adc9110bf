// The request/response values the front hands to and takes from the layer
// above. Both HTTP versions produce exactly these, so routing is shared.

public enum HTTPVersion: Sendable, Equatable {
    case http1_1
    case http2
}

public struct HTTPRequest: Sendable {
    public var method: String
    /// Path without the query string, e.g. "/v2/snapshot_read".
    public var path: String
    public var query: String?
    /// Header names are lower-cased.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    public var version: HTTPVersion
    public var remoteAddress: String

    public init(method: String, path: String, query: String? = nil,
                headers: [(name: String, value: String)], body: [UInt8],
                version: HTTPVersion, remoteAddress: String = "") {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.version = version
        self.remoteAddress = remoteAddress
    }

    /// First value of a header, by case-insensitive name.
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A plain-text response (errors, health checks).
    public static func text(_ status: Int, _ text: String, headers: [(name: String, value: String)] = []) -> HTTPResponse {
        HTTPResponse(status: status,
                     headers: [("content-type", "text/plain; charset=utf-8")] + headers,
                     body: Array(text.utf8))
    }
}

/// What the front calls for every complete request.
public protocol HTTPRequestHandler: Sendable {
    /// Called on a front I/O thread: must not block on writes. Call `respond`
    /// exactly once, either inline (before returning) or later from any thread.
    func handle(_ request: HTTPRequest, respond: @escaping @Sendable (HTTPResponse) -> Void)
}
