/// Per-stream data of an HTTP/2 request and its response. Where the stream
/// is in its life is `state`; the rest is what it carries. Loop thread only.
final class HTTP2Stream {
    let id: Int32
    var state: HTTP2StreamState = .receivingHeaders(.accepted)
    var method = ""
    var rawPath = ""
    var headers: [(name: String, value: String)] = []
    var body: [UInt8] = []
    /// Header bytes of `headers` counted in the connection's buffered-request budget.
    var bufferedHeaderBytes = 0
    /// Upload bytes ignored after an early answer (capped, see `HTTP2Connection.discardCap`).
    var discardedBytes = 0
    /// HPACK-decoded header bytes so far, RFC 9113 accounting (name + value + 32).
    var headerBytes = 0
    /// Headers and body must be complete by then (monotonic ms); a stream
    /// still receiving is answered 408, then reset after one more period.
    var receiveDeadlineMs: UInt64 = 0
    // The response body the data provider reads from.
    var responseBody: [UInt8] = []
    var responseOffset = 0
    /// A streaming response: the data provider reads from its queue and
    /// returns NGHTTP2_ERR_DEFERRED when it is empty.
    var responseStream: HTTPResponseStream?

    init(id: Int32) { self.id = id }
}
