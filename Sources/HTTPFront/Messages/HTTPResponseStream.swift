import Synchronization

/// A response body produced over time. Thread-safe: any thread may write.
///
/// Bytes are queued here; the connection's I/O thread takes them out as the
/// socket (and, on HTTP/2, flow control) allows. Nothing ever blocks on a
/// slow reader: the queue just grows, and `pendingBytes` tells the producer.
public final class HTTPResponseStream: Sendable {
    /// Who takes the bytes out. Cleared when the stream ends, which breaks
    /// the stream → connection reference.
    enum Transport: Sendable {
        /// HTTP/2: wake-ups are posted to the connection's event loop.
        case h2(HTTP2Connection, Int32)
        /// HTTP/1.1: the MHD connection, suspended while the queue is empty.
        case mhd(MHDConnectionHandle)
    }

    private struct State {
        var chunks: [[UInt8]] = []
        var head = 0  // first unread chunk
        var headOffset = 0  // bytes already taken from chunks[head]
        var queued = 0
        var finishing = false  // finish() called: no more writes, EOF once drained
        var ended = false  // transport is done; handlers ran
        var handlers: [@Sendable () -> Void] = []
        var transport: Transport?
        var wakePending = false  // HTTP/2: a wake-up for this stream is posted, not yet run
        var mhdSuspended = false  // HTTP/1.1: we suspended the connection, no resume yet

        var isClosed: Bool { finishing || ended }

        /// Asks the transport to come and read. Returns work to do after
        /// unlocking (posting to an event loop), if any.
        mutating func wake() -> (@Sendable () -> Void)? {
            switch transport {
            case let .h2(conn, id)?:
                if wakePending { return nil }
                wakePending = true
                return { conn.streamReady(id) }
            case let .mhd(connection)?:
                if mhdSuspended {
                    mhdSuspended = false
                    // Under the stream's lock, so it cannot race the suspend in
                    // readMHD or the transport ending (MHD frees the connection
                    // only after the response's free callback, which takes it).
                    connection.resume()
                }
                return nil
            case nil:
                return nil
            }
        }

        /// Copies up to `max` queued bytes.
        mutating func take(_ buf: UnsafeMutableRawPointer, _ max: Int) -> Int {
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
    }

    private let state: Mutex<State>

    init(transport: Transport?) {
        state = Mutex(State(transport: transport))
        LiveCount.responseStreams.add(1)
    }

    deinit { LiveCount.responseStreams.add(-1) }

    /// Queues bytes for the client and wakes the connection. Returns false
    /// (and drops the bytes) once the stream is closed.
    @discardableResult public func write(_ bytes: [UInt8]) -> Bool {
        let (accepted, wake) = state.withLock { s -> (Bool, (@Sendable () -> Void)?) in
            if s.isClosed { return (false, nil) }
            if bytes.isEmpty { return (true, nil) }
            s.chunks.append(bytes)
            s.queued += bytes.count
            return (true, s.wake())
        }
        wake?()
        return accepted
    }

    /// Ends the response normally (HTTP/2: END_STREAM; HTTP/1.1: last chunk). Idempotent.
    public func finish() {
        let wake = state.withLock { s -> (@Sendable () -> Void)? in
            if s.isClosed { return nil }
            s.finishing = true
            return s.wake()
        }
        wake?()
    }

    /// Bytes queued but not yet handed to the socket; lets the producer skip
    /// or coalesce work for a slow reader.
    public var pendingBytes: Int { state.withLock { $0.queued } }

    /// True once finish() was called or the stream ended otherwise; writes then return false.
    public var isClosed: Bool { state.withLock { $0.isClosed } }

    /// Registers a callback run exactly once when the stream ends for any
    /// reason: finish() done, client reset/closed the stream or the
    /// connection, server stop. If already closed, runs it immediately (on
    /// the calling thread). Called from an I/O thread: must not block.
    ///
    /// "Closed" here means ended: after finish() the handlers run once the
    /// last bytes were handed over (or the client went away first).
    public func onClose(_ handler: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { s -> Bool in
            if s.ended { return true }
            s.handlers.append(handler)
            return false
        }
        if runNow { handler() }
    }

    // MARK: front side

    /// The stream for a response that cannot be delivered (client or server
    /// gone): start is still called once, with a stream that is already over.
    static func startClosed(_ start: @Sendable (HTTPResponseStream) -> Void) {
        let s = HTTPResponseStream(transport: nil)
        s.transportEnded()
        start(s)
    }

    enum ReadResult: Equatable {
        case data(Int, eof: Bool)
        /// Nothing queued yet.
        case empty
        case ended
    }

    /// HTTP/2 data provider (loop thread): takes up to `max` bytes.
    func read(into buf: UnsafeMutableRawPointer, max: Int) -> ReadResult {
        state.withLock { s in
            if s.ended { return .ended }
            let n = s.take(buf, max)
            let eof = s.finishing && s.queued == 0
            if n == 0 && !eof { return .empty }
            return .data(n, eof: eof)
        }
    }

    /// HTTP/2: the posted wake-up runs now; later writes must post again.
    func clearWake() {
        state.withLock { $0.wakePending = false }
    }

    /// MHD content reader (MHD thread). With nothing queued it suspends the
    /// connection and returns 0; write/finish resume it.
    func readMHD(into buf: UnsafeMutableRawPointer, max: Int) -> Int {
        state.withLock { s in
            if s.ended { return MHDConnectionHandle.readerEndWithError }
            let n = s.take(buf, max)
            if n > 0 { return n }
            if s.finishing { return MHDConnectionHandle.readerEndOfStream }
            guard case let .mhd(connection)? = s.transport else { return MHDConnectionHandle.readerEndWithError }
            // MHD does not notice a client leaving while suspended; check before
            // suspending so a dead client is caught right after the next write.
            if connection.peerClosed { return MHDConnectionHandle.readerEndWithError }
            s.mhdSuspended = true
            connection.suspend()
            return 0
        }
    }

    /// The transport is done with this stream (finished, reset, connection
    /// gone, server stopped): drop the queue and run the handlers once,
    /// outside the lock.
    func transportEnded() {
        let handlers = state.withLock { s -> [@Sendable () -> Void] in
            if s.ended { return [] }
            s.ended = true
            s.transport = nil
            s.mhdSuspended = false
            s.chunks = []
            s.head = 0
            s.headOffset = 0
            s.queued = 0
            let hs = s.handlers
            s.handlers = []
            return hs
        }
        for h in handlers { h() }
    }
}
