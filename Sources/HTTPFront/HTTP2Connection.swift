import CLinux
import CMicroHTTPD   // epoll constants
import CNGHTTP2
import Glibc
import Logging

/// Per-stream state of an HTTP/2 request and its response.
final class HTTP2Stream {
    let id: Int32
    var method = ""
    var rawPath = ""
    var headers: [(name: String, value: String)] = []
    var body: [UInt8] = []
    /// Header bytes of `headers` counted in the connection's buffered-request budget.
    var bufferedHeaderBytes = 0
    /// Content-Length or received data went over the limit: body dropped, 413 sent.
    var tooLarge = false
    var discardedBytes = 0
    var resetSent = false
    /// END_STREAM seen from the client.
    var remoteEnded = false
    /// The request's header block is complete (END_HEADERS seen).
    var headersDone = false
    /// HPACK-decoded header bytes so far, RFC 9113 accounting (name + value + 32).
    var headerBytes = 0
    /// Over `maxHeaderBytes`: headers dropped, answered 431.
    var headersTooLarge = false
    /// Headers and body must be complete by then (monotonic ms); a stream
    /// still receiving is answered 408, then reset after one more period.
    var receiveDeadlineMs: UInt64 = 0
    var timedOut = false
    var dispatched = false
    var responded = false
    // The response body the data provider reads from.
    var responseBody: [UInt8] = []
    var responseOffset = 0
    /// A streaming response: the data provider reads from its queue and
    /// returns NGHTTP2_ERR_DEFERRED when it is empty.
    var responseStream: HTTPResponseStream?

    init(id: Int32) { self.id = id }
}

/// One HTTP/2 connection (h2c prior knowledge, or h2 over TLS via ALPN)
/// served by nghttp2 on an event loop. All methods run on the loop thread; `respond` closures handed
/// to the handler hop onto the loop when called elsewhere.
final class HTTP2Connection: LoopConnection, @unchecked Sendable {
    let fd: Int32
    let token: UInt64
    let loop: EventLoop
    let context: FrontContext
    let remoteAddress: String
    let slot: ConnectionSlot
    /// The byte stream: the plain socket or a TLS session on it.
    private let io: SocketIO

    private var session: OpaquePointer?
    private var streams: [Int32: HTTP2Stream] = [:]
    /// Streams in `streams` not yet `responded` (read after every socket read).
    private var unansweredStreams = 0
    private var outBuf: [UInt8] = []
    private var outOffset = 0
    private var closed = false
    /// True while inside nghttp2_session_mem_recv: submitting is fine there,
    /// but mem_send must wait until mem_recv returns.
    private var inRecv = false
    private var lastActivityMs: UInt64
    /// Request bytes (stored header fields and bodies) buffered across this
    /// connection's streams until they are handed to the handler.
    private var bufferedRequestBytes = 0
    /// Streams whose request is still arriving (the only ones `tick` checks:
    /// with tens of thousands of open watches, scanning all would cost).
    private var receiving: [Int32: HTTP2Stream] = [:]
    /// Reaching `maxConcurrentStreams` is logged and counted once.
    private var streamLimitReported = false
    /// Rapid-reset token bucket (see `earlyResetBurst`).
    private var earlyResetTokens: Double
    private var earlyResetRefilledMs: UInt64
    /// Set inside mem_recv when the connection must go (GOAWAY queued).
    private var terminating = false

    // Streams with new data (or finish) since the last wake-up; any thread
    // adds, the loop drains. One loop task per batch, not per write.
    private let readyLock = NSLockLite()
    private var readyIds: [Int32] = []
    private var readyScheduled = false

    private static let outHighWater = 64 * 1024
    private static let discardCap = 64 << 20

    init(fd: Int32, token: UInt64, loop: EventLoop, context: FrontContext, remoteAddress: String,
         tls: TLSSession? = nil, slot: ConnectionSlot) {
        self.slot = slot
        self.fd = fd
        self.io = SocketIO(fd: fd, tls: tls)
        self.token = token
        self.loop = loop
        self.context = context
        self.remoteAddress = remoteAddress
        self.lastActivityMs = SocketOptions.nowMs()
        self.earlyResetTokens = Double(context.configuration.earlyResetBurst)
        self.earlyResetRefilledMs = lastActivityMs
        LiveCount.http2Connections.add(1)
    }

    deinit { LiveCount.http2Connections.add(-1) }

    /// Creates the nghttp2 session and queues our SETTINGS. False on failure.
    func start() -> Bool {
        var cbs: OpaquePointer?
        guard nghttp2_session_callbacks_new(&cbs) == 0, let cbs else { return false }
        defer { nghttp2_session_callbacks_del(cbs) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs) { _, frame, user in
            guard let frame, let user else { return 0 }
            return HTTP2Connection.from(user).onBeginHeaders(frame)
        }
        nghttp2_session_callbacks_set_on_header_callback(cbs) { _, frame, name, namelen, value, valuelen, _, user in
            guard let frame, let name, let value, let user else { return 0 }
            return HTTP2Connection.from(user).onHeader(frame, name, namelen, value, valuelen)
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs) { _, frame, user in
            guard let frame, let user else { return 0 }
            return HTTP2Connection.from(user).onFrameRecv(frame)
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs) { _, _, streamId, data, len, user in
            guard let data, let user else { return 0 }
            return HTTP2Connection.from(user).onDataChunk(streamId, data, len)
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs) { _, streamId, _, user in
            guard let user else { return 0 }
            // Finished, reset by the client (RST_STREAM) or refused: a
            // streaming response ends here and runs its onClose handlers.
            let conn = HTTP2Connection.from(user)
            let stream = conn.streams.removeValue(forKey: streamId)
            if let stream {
                if !stream.responded { conn.unansweredStreams -= 1 }
                conn.receiving[streamId] = nil
                conn.dropRequest(stream)
            }
            stream?.responseStream?.transportEnded()
            return 0
        }
        var opt: OpaquePointer?
        guard nghttp2_option_new(&opt) == 0, let opt else { return false }
        defer { nghttp2_option_del(opt) }
        // A header block split into more CONTINUATION frames than this is a
        // flood (CVE-2024-28182); nghttp2's default is 8.
        nghttp2_option_set_max_continuations(opt, 16)
        // Our response headers are three short fields: indexing them in a
        // dynamic HPACK table saves a few bytes but nghttp2's table lookup
        // was 15 % of a point read's CPU in the profile.
        nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0)
        // nghttp2 keeps up to SETTINGS_MAX_CONCURRENT_STREAMS closed streams
        // for the RFC 7540 priority tree: with a limit of 100,000 that is tens
        // of MiB per connection of streams nobody uses. Drop them at close.
        nghttp2_option_set_no_closed_streams(opt, 1)
        // nghttp2's own rapid-reset guard counts every RST_STREAM (1000, then
        // 33/s): cancelling a few thousand watches at once, which a server
        // process does when its clients leave, would end the connection and
        // every other watch on it. Our guard counts only resets of streams
        // not yet answered (onFrameRecv); nghttp2's stays as a backstop sized
        // to the stream limit.
        let streamLimit = UInt64(max(1, context.configuration.maxConcurrentStreams))
        nghttp2_option_set_stream_reset_rate_limit(opt, streamLimit + 1000, max(1000, streamLimit / 10))
        var s: OpaquePointer?
        // Unretained: the session never outlives this object (deleted in close()).
        guard nghttp2_session_server_new2(&s, cbs, Unmanaged.passUnretained(self).toOpaque(), opt) == 0,
              let s else {
            return false
        }
        session = s
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                                   value: UInt32(clamping: context.configuration.maxConcurrentStreams)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: 1 << 20),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                                   value: UInt32(clamping: context.configuration.maxHeaderBytes)),
        ]
        guard nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count) == 0 else {
            return false
        }
        // The connection window is not covered by SETTINGS; raise it so many
        // concurrent uploads are not throttled by the 64 KiB default.
        _ = nghttp2_session_set_local_window_size(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, 16 << 20)
        return true
    }

    private static func from(_ user: UnsafeMutableRawPointer) -> HTTP2Connection {
        Unmanaged<HTTP2Connection>.fromOpaque(user).takeUnretainedValue()
    }

    // MARK: LoopConnection

    func handleEvents(_ events: UInt32) {
        guard !closed else { return }
        let readable = EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue
        if events & readable != 0 {
            readAvailable()
            if closed { return }
        }
        flush()
    }

    func tick(nowMs: UInt64) {
        guard !closed, let session else { return }
        let idleMs = UInt64(max(1, context.configuration.idleTimeoutSeconds)) * 1000
        if streams.isEmpty && nowMs &- lastActivityMs > idleMs {
            _ = nghttp2_session_terminate_session(session, NGHTTP2_NO_ERROR.rawValue)
            flush()
            close()
            return
        }
        // Requests still receiving past the request timeout (slowloris).
        let periodMs = UInt64(max(1, context.configuration.requestTimeoutSeconds)) * 1000
        var acted = false
        for stream in Array(receiving.values) where nowMs >= stream.receiveDeadlineMs {
            acted = true
            if !stream.headersDone {
                // A header block in progress blocks the whole connection
                // (CONTINUATION must follow at once): give up on it.
                context.logger.debug("h2 \(remoteAddress): header block not complete within the request timeout")
                _ = nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR.rawValue)
                flush()
                close()
                return
            }
            if !stream.responded {
                stream.timedOut = true
                dropRequest(stream)
                submit(stream.id, .text(408, "request not complete within \(context.configuration.requestTimeoutSeconds) s"))
                stream.receiveDeadlineMs = nowMs + periodMs
            } else if !stream.resetSent {
                // Answered (408, 413, 431) but the client still does not end
                // its upload: stop it.
                stream.resetSent = true
                _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id,
                                              NGHTTP2_CANCEL.rawValue)
            }
        }
        if acted { flush() }
    }

    func shutdown() {
        guard !closed, let session else { return }
        var streaming = false
        for stream in streams.values {
            guard let rs = stream.responseStream else { continue }
            // End open streaming responses cleanly (END_STREAM once what is
            // queued went out); the wake-up post is refused by the stopping
            // loop, so resume here.
            streaming = true
            rs.finish()
            rs.clearWake()
            _ = nghttp2_session_resume_data(session, stream.id)
        }
        if streaming {
            // A graceful GOAWAY lets the pending DATA frames go out first.
            _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
                                      nghttp2_session_get_last_proc_stream_id(session),
                                      NGHTTP2_NO_ERROR.rawValue, nil, 0)
        } else {
            _ = nghttp2_session_terminate_session(session, NGHTTP2_NO_ERROR.rawValue)
        }
        flush()   // best effort: whatever fits into the socket buffer now
        close()   // ends the remaining streams (onClose handlers run)
    }

    // MARK: I/O

    /// Edge-triggered: drain the socket until EAGAIN.
    private func readAvailable() {
        let buf = loop.readBuffer
        var gotData = false
        while !closed {
            // TLS: gnutls may hold decrypted bytes beyond what the socket
            // signals; reading until AGAIN drains both.
            let n = io.recv(buf.baseAddress!, buf.count)
            if n > 0 {
                gotData = true
                inRecv = true
                let rv = nghttp2_session_mem_recv(session, buf.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
                inRecv = false
                if terminating {   // GOAWAY queued by a flood guard
                    flush()
                    close()
                    return
                }
                if rv < 0 {
                    context.logger.debug("h2 \(remoteAddress): \(String(cString: nghttp2_strerror(Int32(rv))))")
                    flush()   // GOAWAY if nghttp2 queued one
                    close()
                    return
                }
                continue
            }
            if n == 0 { close(); return }    // peer closed
            if n == SocketIO.again { break }
            close()
            return
        }
        // A client with Nagle on holds its next small segment (a body after
        // its headers, or the next request) until this data is ACKed. When
        // every request read so far was answered inline, flush() right after
        // this sends the ACK with the responses. Otherwise (nothing to send,
        // a request still arriving, a write waiting for its commit) ACK now,
        // not after the 40 ms delayed-ACK timer. Linux clears quick-ack on its
        // own, so it is re-armed per read; not unconditionally, because a pure
        // ACK per request was ~9 % of a point read's CPU (DelayedAckTests).
        guard gotData, let session else { return }
        if nghttp2_session_want_write(session) == 0 || unansweredStreams > 0 {
            SocketOptions.setQuickAck(fd)
        }
    }

    /// Sends pending output, then pulls more frames from nghttp2, until it has
    /// nothing more or the socket is full (EAGAIN → wait for EPOLLOUT edge).
    func flush() {
        guard !closed, let session, !inRecv else { return }
        while true {
            while outOffset < outBuf.count {
                // TLS: an AGAIN keeps the same bytes pending (gnutls holds
                // the encrypted record and is called again with them).
                let n = outBuf.withUnsafeBytes {
                    io.send($0.baseAddress! + outOffset, $0.count - outOffset)
                }
                if n > 0 { outOffset += n; continue }
                if n == SocketIO.again { return }
                close()
                return
            }
            outBuf.removeAll(keepingCapacity: true)
            outOffset = 0
            // Coalesce frames into one send.
            while outBuf.count < HTTP2Connection.outHighWater {
                var ptr: UnsafePointer<UInt8>?
                let n = nghttp2_session_mem_send(session, &ptr)
                if n < 0 { close(); return }
                if n == 0 { break }
                outBuf.append(contentsOf: UnsafeBufferPointer(start: ptr, count: n))
            }
            if outBuf.isEmpty { break }
        }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            close()
        }
    }

    /// Closes the socket exactly once and frees the session.
    func close() {
        guard !closed else { return }
        closed = true
        loop.deregister(token: token, fd: fd)
        io.close()
        if let session { nghttp2_session_del(session) }
        session = nil
        slot.release()
        let open = streams.values.compactMap { $0.responseStream }
        streams.removeAll()
        receiving.removeAll()
        unansweredStreams = 0
        outBuf = []
        // Streaming responses end with the connection; this also drops their
        // references to this object.
        for rs in open { rs.transportEnded() }
    }

    // MARK: streaming responses

    /// Any thread: stream `id` has new bytes or was finished. Coalesced into
    /// one loop task per batch.
    func streamReady(_ id: Int32) {
        readyLock.lock()
        readyIds.append(id)
        let post = !readyScheduled
        readyScheduled = true
        readyLock.unlock()
        // Refused only when the loop stops; shutdown() then ends the streams.
        if post { loop.execute { [self] in resumeReadyStreams() } }
    }

    private func resumeReadyStreams() {
        readyLock.lock()
        let ids = readyIds
        readyIds.removeAll(keepingCapacity: true)
        readyScheduled = false
        readyLock.unlock()
        guard !closed, let session else { return }
        for id in ids {
            guard let rs = streams[id]?.responseStream else { continue }
            rs.clearWake()
            // Fails harmlessly when the stream is not deferred by us (e.g.
            // waiting for a WINDOW_UPDATE, which nghttp2 handles itself).
            _ = nghttp2_session_resume_data(session, id)
        }
        flush()
    }

    // MARK: nghttp2 callbacks (run inside mem_recv / mem_send)

    private func isRequestHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Bool {
        frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue)
            && frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST
    }

    private func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        if isRequestHeaders(frame) {
            let id = frame.pointee.hd.stream_id
            let stream = HTTP2Stream(id: id)
            stream.receiveDeadlineMs = SocketOptions.nowMs()
                + UInt64(max(1, context.configuration.requestTimeoutSeconds)) * 1000
            if let replaced = streams.updateValue(stream, forKey: id), !replaced.responded { unansweredStreams -= 1 }
            unansweredStreams += 1
            receiving[id] = stream
            let limit = context.configuration.maxConcurrentStreams
            if streams.count >= limit && !streamLimitReported {
                // The client now queues further requests (Deno: every request
                // of the Deno.Kv handle) until a stream ends: say why, once.
                streamLimitReported = true
                LiveCount.http2StreamLimitReached.add(1)
                context.logger.notice("h2 \(remoteAddress): reached the stream limit of \(limit) concurrent streams (http2_max_concurrent_streams); the client waits for a stream to end before its next request")
            }
        }
        return 0
    }

    /// A client RST_STREAM on a stream not answered yet: rapid reset
    /// (CVE-2023-44487) costs the handler's work without holding a stream
    /// slot. Token bucket; when empty, GOAWAY ENHANCE_YOUR_CALM.
    private func noteEarlyReset() {
        let c = context.configuration
        let now = SocketOptions.nowMs()
        let burst = Double(max(1, c.earlyResetBurst))
        earlyResetTokens = min(burst, earlyResetTokens + Double(now &- earlyResetRefilledMs) * Double(c.earlyResetsPerSecond) / 1000)
        earlyResetRefilledMs = now
        if earlyResetTokens >= 1 {
            earlyResetTokens -= 1
            return
        }
        guard !terminating, let session else { return }
        terminating = true
        LiveCount.http2RapidResetCloses.add(1)
        context.logger.notice("h2 \(remoteAddress): more than \(c.earlyResetBurst) streams (then \(c.earlyResetsPerSecond)/s) reset before their response (rapid reset); closing with ENHANCE_YOUR_CALM")
        _ = nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM.rawValue)
    }

    private func onHeader(_ frame: UnsafePointer<nghttp2_frame>,
                          _ name: UnsafePointer<UInt8>, _ namelen: Int,
                          _ value: UnsafePointer<UInt8>, _ valuelen: Int) -> Int32 {
        guard frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
              let stream = streams[frame.pointee.hd.stream_id] else { return 0 }
        // RFC 9113 §6.5.2 accounting; a flood of tiny (indexed) fields counts too.
        stream.headerBytes += namelen + valuelen + 32
        if stream.headerBytes > context.configuration.maxHeaderBytes {
            if !stream.headersTooLarge {
                stream.headersTooLarge = true
                bufferedRequestBytes -= stream.bufferedHeaderBytes
                stream.bufferedHeaderBytes = 0
                stream.headers = []
            }
            return 0   // keep decoding (HPACK state), store nothing
        }
        if stream.timedOut { return 0 }   // refused below: store nothing
        let cost = namelen + valuelen + 32
        if bufferedRequestBytes + cost > context.configuration.maxBufferedRequestBytesPerConnection {
            refuseOverBudget(stream)
            return 0
        }
        bufferedRequestBytes += cost
        stream.bufferedHeaderBytes += cost
        let n = String(decoding: UnsafeBufferPointer(start: name, count: namelen), as: UTF8.self)
        let v = String(decoding: UnsafeBufferPointer(start: value, count: valuelen), as: UTF8.self)
        switch n {
        case ":method": stream.method = v
        case ":path": stream.rawPath = v
        case ":authority": stream.headers.append((name: "host", value: v))
        case ":scheme": break
        default:
            // nghttp2 already rejects upper-case names in HTTP/2; lower-case anyway for safety.
            stream.headers.append((name: n.lowercased(), value: v))
            if n == "content-length", let len = Int(v), len > context.configuration.maxBodyBytes {
                stream.tooLarge = true
            }
        }
        return 0
    }

    private func onFrameRecv(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        // A complete frame (any type) is activity; bytes trickling in without
        // completing one are not, so they cannot hold an idle connection.
        lastActivityMs = SocketOptions.nowMs()
        let type = frame.pointee.hd.type
        if type == UInt8(NGHTTP2_RST_STREAM.rawValue) {
            // Called before nghttp2 closes the stream.
            if let stream = streams[frame.pointee.hd.stream_id], !stream.responded { noteEarlyReset() }
            return 0
        }
        guard type == UInt8(NGHTTP2_HEADERS.rawValue) || type == UInt8(NGHTTP2_DATA.rawValue),
              let stream = streams[frame.pointee.hd.stream_id] else { return 0 }
        if type == UInt8(NGHTTP2_HEADERS.rawValue) { stream.headersDone = true }
        if isRequestHeaders(frame) && stream.headersTooLarge {
            stream.tooLarge = true   // body ignored like an oversized one
            dropRequest(stream)
            if !stream.responded {
                submit(stream.id, .text(431, "request headers exceed the limit of \(context.configuration.maxHeaderBytes) bytes"))
            }
        } else if isRequestHeaders(frame) && stream.tooLarge {
            // Answer before the body arrives; the rest of it is ignored.
            respondTooLarge(stream)
        }
        if frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0 {
            stream.remoteEnded = true
            receiving[stream.id] = nil
            if !stream.tooLarge && !stream.timedOut && !stream.dispatched { dispatch(stream) }
        }
        return 0
    }

    private func onDataChunk(_ streamId: Int32, _ data: UnsafePointer<UInt8>, _ len: Int) -> Int32 {
        guard let stream = streams[streamId] else { return 0 }
        if stream.tooLarge || stream.timedOut {
            // The 413 is (being) sent. The rest of the upload is discarded
            // rather than reset at once: curl < 8.x reports RST_STREAM(NO_ERROR)
            // as a failure even after a complete response. Past a cap, stop the
            // upload anyway so a client cannot stream forever.
            stream.discardedBytes += len
            if stream.discardedBytes > HTTP2Connection.discardCap && !stream.resetSent, let session {
                stream.resetSent = true
                _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamId,
                                              NGHTTP2_NO_ERROR.rawValue)
            }
            return 0
        }
        if stream.body.count + len > context.configuration.maxBodyBytes {
            stream.tooLarge = true
            dropRequest(stream)
            respondTooLarge(stream)
            return 0
        }
        if bufferedRequestBytes + len > context.configuration.maxBufferedRequestBytesPerConnection {
            refuseOverBudget(stream)
            return 0
        }
        bufferedRequestBytes += len
        stream.body.append(contentsOf: UnsafeBufferPointer(start: data, count: len))
        return 0
    }

    // MARK: requests and responses

    /// Forgets a stream's buffered request (headers and body) and its share
    /// of the per-connection budget.
    func dropRequest(_ stream: HTTP2Stream) {
        bufferedRequestBytes -= stream.body.count + stream.bufferedHeaderBytes
        stream.body = []
        stream.headers = []
        stream.bufferedHeaderBytes = 0
    }

    /// Many concurrent requests on one connection, each within its limits,
    /// together too much memory: reset this one (it is never dispatched).
    private func refuseOverBudget(_ stream: HTTP2Stream) {
        guard let session, !stream.resetSent else { return }
        context.logger.debug("h2 \(remoteAddress): buffered request bytes over the per-connection limit")
        stream.timedOut = true
        stream.resetSent = true
        dropRequest(stream)
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id,
                                      NGHTTP2_ENHANCE_YOUR_CALM.rawValue)
    }

    private func respondTooLarge(_ stream: HTTP2Stream) {
        guard !stream.responded else { return }
        let limit = context.configuration.maxBodyBytes
        submit(stream.id, .text(413, "request body exceeds the limit of \(limit) bytes"))
    }

    private func dispatch(_ stream: HTTP2Stream) {
        stream.dispatched = true
        let (path, query) = splitPathAndQuery(stream.rawPath)
        let request = HTTPRequest(method: stream.method, path: path, query: query,
                                  headers: stream.headers, body: stream.body,
                                  version: .http2, remoteAddress: remoteAddress)
        dropRequest(stream)
        let id = stream.id
        let conn = self
        let loop = self.loop
        context.handler.handle(request) { response in
            if loop.inLoopThread {
                // Inline (or same-loop) answer: no hop. Inside mem_recv the
                // flush happens when mem_recv returns.
                conn.submit(id, response)
                conn.flush()
            } else {
                let queued = loop.execute {
                    conn.submit(id, response)
                    conn.flush()
                }
                if !queued, let start = response.stream {
                    HTTPResponseStream.startClosed(start)   // server stopping
                }
            }
        }
    }

    /// Queues a response on a stream; ignored when the stream or connection is gone.
    func submit(_ streamId: Int32, _ response: HTTPResponse) {
        guard !closed, let session, let stream = streams[streamId], !stream.responded else {
            // Client reset the stream or left: a streaming producer still
            // learns about it (closed stream, onClose runs at once).
            if let start = response.stream { HTTPResponseStream.startClosed(start) }
            return
        }
        stream.responded = true
        unansweredStreams -= 1
        let streaming = response.stream != nil
        if streaming {
            stream.responseStream = HTTPResponseStream(transport: .h2(self, streamId))
        } else {
            stream.responseBody = response.body
        }
        stream.responseOffset = 0

        var fields: [(String, String)] = [(":status", String(response.status))]
        var hasLength = false
        for (name, value) in response.headers {
            let lower = name.lowercased()
            switch lower {
            // Connection-specific fields are forbidden in HTTP/2.
            case "connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection": continue
            case "content-length":
                if streaming { continue }
                hasLength = true
            default: break
            }
            fields.append((lower, value))
        }
        if !hasLength && !streaming { fields.append(("content-length", String(response.body.count))) }

        // nghttp2 copies names and values during submit, so temporary C strings suffice.
        var cStrings: [UnsafeMutablePointer<CChar>] = []
        defer { cStrings.forEach { free($0) } }
        var nva: [nghttp2_nv] = []
        nva.reserveCapacity(fields.count)
        for (name, value) in fields {
            guard let n = strdup(name), let v = strdup(value) else { continue }
            cStrings.append(n); cStrings.append(v)
            nva.append(nghttp2_nv(
                name: UnsafeMutableRawPointer(n).assumingMemoryBound(to: UInt8.self),
                value: UnsafeMutableRawPointer(v).assumingMemoryBound(to: UInt8.self),
                namelen: strlen(n), valuelen: strlen(v), flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
        }
        let rv: Int32
        if response.body.isEmpty && !streaming {
            rv = nghttp2_submit_response(session, streamId, nva, nva.count, nil)
        } else {
            var provider = nghttp2_data_provider()
            provider.source.ptr = nil
            provider.read_callback = { _, streamId, buf, length, dataFlags, _, user in
                guard let user, let buf, let dataFlags else {
                    return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
                }
                return HTTP2Connection.from(user).readBody(streamId, buf, length, dataFlags)
            }
            rv = nghttp2_submit_response(session, streamId, nva, nva.count, &provider)
        }
        if rv != 0 {
            context.logger.debug("h2 submit_response failed: \(String(cString: nghttp2_strerror(rv)))")
        }
        if let start = response.stream, let rs = stream.responseStream {
            if rv != 0 {
                stream.responseStream = nil
                rs.transportEnded()
            }
            // May write (or finish) right away: that only posts a wake-up.
            start(rs)
        }
    }

    private func readBody(_ streamId: Int32, _ buf: UnsafeMutablePointer<UInt8>, _ length: Int,
                          _ dataFlags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let stream = streams[streamId] else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        if let rs = stream.responseStream {
            switch rs.read(into: buf, max: length) {
            case let .data(n, eof):
                if eof { dataFlags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
                return n
            case .empty:
                // Resumed by streamReady once write/finish is called.
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            case .ended:
                return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
            }
        }
        let remaining = stream.responseBody.count - stream.responseOffset
        let n = min(remaining, length)
        if n > 0 {
            stream.responseBody.withUnsafeBufferPointer {
                buf.update(from: $0.baseAddress! + stream.responseOffset, count: n)
            }
            stream.responseOffset += n
        }
        if stream.responseOffset >= stream.responseBody.count {
            dataFlags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            stream.responseBody = []
            stream.responseOffset = 0
        }
        return n
    }
}

/// "/a/b?x=1" → ("/a/b", "x=1"); no "?" → query nil.
func splitPathAndQuery(_ raw: String) -> (String, String?) {
    guard let q = raw.firstIndex(of: "?") else { return (raw, nil) }
    return (String(raw[..<q]), String(raw[raw.index(after: q)...]))
}
