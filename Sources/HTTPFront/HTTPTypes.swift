import CLinux
import CMicroHTTPD

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
    public static func streaming(status: Int = 200, headers: [(name: String, value: String)],
                                 start: @escaping @Sendable (HTTPResponseStream) -> Void) -> HTTPResponse {
        var r = HTTPResponse(status: status, headers: headers)
        r.stream = start
        return r
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
    /// Long-lived bodies (watch streams): respond with `HTTPResponse.streaming`.
    func handle(_ request: HTTPRequest, respond: @escaping @Sendable (HTTPResponse) -> Void)
}

/// A response body produced over time. Thread-safe: any thread may write.
///
/// Bytes are queued here; the connection's I/O thread takes them out as the
/// socket (and, on HTTP/2, flow control) allows. Nothing ever blocks on a
/// slow reader: the queue just grows, and `pendingBytes` tells the producer.
public final class HTTPResponseStream: @unchecked Sendable {
    /// Who takes the bytes out. Cleared when the stream ends, which breaks
    /// the stream → connection reference.
    enum Transport {
        /// HTTP/2: wake-ups are posted to the connection's event loop.
        case h2(HTTP2Connection, Int32)
        /// HTTP/1.1: the MHD connection, suspended while the queue is empty.
        case mhd(OpaquePointer)
    }

    private let lock = NSLockLite()
    private var chunks: [[UInt8]] = []
    private var head = 0          // first unread chunk
    private var headOffset = 0    // bytes already taken from chunks[head]
    private var queued = 0
    private var finishing = false // finish() called: no more writes, EOF once drained
    private var ended = false     // transport is done; handlers ran
    private var handlers: [@Sendable () -> Void] = []
    private var transport: Transport?
    private var wakePending = false   // HTTP/2: a wake-up for this stream is posted, not yet run
    private var mhdSuspended = false  // HTTP/1.1: we suspended the connection, no resume yet

    init(transport: Transport?) {
        self.transport = transport
        LiveCount.responseStreams.add(1)
    }

    deinit { LiveCount.responseStreams.add(-1) }

    /// Queues bytes for the client and wakes the connection. Returns false (and drops the bytes) once the stream is closed.
    @discardableResult public func write(_ bytes: [UInt8]) -> Bool {
        lock.lock()
        if finishing || ended { lock.unlock(); return false }
        if bytes.isEmpty { lock.unlock(); return true }
        chunks.append(bytes)
        queued += bytes.count
        let wake = wakeLocked()
        lock.unlock()
        wake?()
        return true
    }

    /// Ends the response normally (HTTP/2: END_STREAM; HTTP/1.1: last chunk). Idempotent.
    public func finish() {
        lock.lock()
        if finishing || ended { lock.unlock(); return }
        finishing = true
        let wake = wakeLocked()
        lock.unlock()
        wake?()
    }

    /// Bytes queued but not yet handed to the socket; lets the producer skip or coalesce work for a slow reader.
    public var pendingBytes: Int { lock.withLock { queued } }

    /// True once finish() was called or the stream ended otherwise; writes then return false.
    public var isClosed: Bool { lock.withLock { finishing || ended } }

    /// Registers a callback run exactly once when the stream ends for any reason: finish() done, client reset/closed the stream or the connection, server stop. If already closed, runs it immediately (on the calling thread). Called from an I/O thread: must not block.
    ///
    /// "Closed" here means ended: after finish() the handlers run once the
    /// last bytes were handed over (or the client went away first).
    public func onClose(_ handler: @escaping @Sendable () -> Void) {
        lock.lock()
        if ended { lock.unlock(); handler(); return }
        handlers.append(handler)
        lock.unlock()
    }

    // MARK: front side

    /// The stream for a response that cannot be delivered (client or server
    /// gone): start is still called once, with a stream that is already over.
    static func startClosed(_ start: @Sendable (HTTPResponseStream) -> Void) {
        let s = HTTPResponseStream(transport: nil)
        s.transportEnded()
        start(s)
    }

    /// Under `lock`: asks the transport to come and read. Returns work to do
    /// after unlocking (posting to an event loop), if any.
    private func wakeLocked() -> (() -> Void)? {
        switch transport {
        case let .h2(conn, id)?:
            if wakePending { return nil }
            wakePending = true
            return { conn.streamReady(id) }
        case let .mhd(connection)?:
            if mhdSuspended {
                mhdSuspended = false
                // Under our lock, so it cannot race the suspend in readMHD or
                // the transport ending (MHD frees the connection only after
                // the response's free callback, which takes this lock).
                MHD_resume_connection(connection)
            }
            return nil
        case nil:
            return nil
        }
    }

    /// Copies up to `max` queued bytes. Under `lock`.
    private func takeLocked(_ buf: UnsafeMutableRawPointer, _ max: Int) -> Int {
        var n = 0
        while n < max && head < chunks.count {
            let avail = chunks[head].count - headOffset
            let k = min(avail, max - n)
            chunks[head].withUnsafeBytes { src in
                (buf + n).copyMemory(from: src.baseAddress! + headOffset, byteCount: k)
            }
            n += k
            headOffset += k
            if headOffset == chunks[head].count {
                chunks[head] = []
                head += 1
                headOffset = 0
            }
        }
        if head == chunks.count {
            chunks.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > chunks.count {
            chunks.removeFirst(head)
            head = 0
        }
        queued -= n
        return n
    }

    enum ReadResult: Equatable {
        case data(Int, eof: Bool)
        /// Nothing queued yet.
        case empty
        case ended
    }

    /// HTTP/2 data provider (loop thread): takes up to `max` bytes.
    func read(into buf: UnsafeMutableRawPointer, max: Int) -> ReadResult {
        lock.lock()
        defer { lock.unlock() }
        if ended { return .ended }
        let n = takeLocked(buf, max)
        let eof = finishing && queued == 0
        if n == 0 && !eof { return .empty }
        return .data(n, eof: eof)
    }

    /// HTTP/2: the posted wake-up runs now; later writes must post again.
    func clearWake() {
        lock.withLock { wakePending = false }
    }

    /// MHD content reader (MHD thread). With nothing queued it suspends the
    /// connection and returns 0; write/finish resume it.
    func readMHD(into buf: UnsafeMutableRawPointer, max: Int) -> Int {
        lock.lock()
        defer { lock.unlock() }
        if ended { return -2 }   // MHD_CONTENT_READER_END_WITH_ERROR
        let n = takeLocked(buf, max)
        if n > 0 { return n }
        if finishing { return -1 }   // MHD_CONTENT_READER_END_OF_STREAM
        guard case let .mhd(connection)? = transport else { return -2 }
        // MHD does not notice a client leaving while suspended; check before
        // suspending so a dead client is caught right after the next write.
        if kv_mhd_peer_closed(connection) != 0 { return -2 }
        mhdSuspended = true
        MHD_suspend_connection(connection)
        return 0
    }

    /// The transport is done with this stream (finished, reset, connection
    /// gone, server stopped): drop the queue and run the handlers once,
    /// outside the lock.
    func transportEnded() {
        lock.lock()
        if ended { lock.unlock(); return }
        ended = true
        transport = nil
        mhdSuspended = false
        chunks = []
        head = 0
        headOffset = 0
        queued = 0
        let hs = handlers
        handlers = []
        lock.unlock()
        for h in hs { h() }
    }
}
