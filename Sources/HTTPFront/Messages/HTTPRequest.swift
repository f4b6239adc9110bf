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

    public init(
        method: String, path: String, query: String? = nil,
        headers: [(name: String, value: String)], body: [UInt8],
        version: HTTPVersion, remoteAddress: String = ""
    ) {
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

/// "/a/b?x=1" → ("/a/b", "x=1"); no "?" → query nil.
func splitPathAndQuery(_ raw: String) -> (String, String?) {
    guard let q = raw.firstIndex(of: "?") else { return (raw, nil) }
    return (String(raw[..<q]), String(raw[raw.index(after: q)...]))
}
