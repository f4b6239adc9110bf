import Threading
import CLinux
import CNGHTTP2
import Glibc
import Logging
import Synchronization

/// One HTTP/2 connection (h2c prior knowledge, or h2 over TLS via ALPN)
/// served by nghttp2 on an event loop. This file holds the session set-up,
/// the loop's hooks and closing; socket I/O, nghttp2's frame callbacks and
/// the responses are in the HTTP2Connection+*.swift files.
///
/// @unchecked Sendable: everything except `ready` is touched only on the
/// loop thread (all methods run there); other threads reach the connection
/// only through `streamReady` (which locks `ready`) and through closures
/// they post to the loop with `EventLoop.execute`.
final class HTTP2Connection: LoopConnection, @unchecked Sendable {
    let fd: Int32
    let token: UInt64
    let loop: EventLoop
    let context: FrontContext
    let remoteAddress: String
    let slot: ConnectionSlot
    /// The byte stream: the plain socket or a TLS session on it.
    let io: SocketIO

    var session: OpaquePointer?
    var streams: [Int32: HTTP2Stream] = [:]
    /// Streams in `streams` not yet answered (read after every socket read).
    var unansweredStreams = 0
    var outBuf: [UInt8] = []
    var outOffset = 0
    var closed = false
    /// True while inside nghttp2_session_mem_recv: submitting is fine there,
    /// but mem_send must wait until mem_recv returns.
    var inRecv = false
    var lastActivityMs: UInt64
    /// Request bytes (stored header fields and bodies) buffered across this
    /// connection's streams until they are handed to the handler.
    var bufferedRequestBytes = 0
    /// Streams whose request is still arriving (the only ones `tick` checks:
    /// with tens of thousands of open watches, scanning all would cost).
    var receiving: [Int32: HTTP2Stream] = [:]
    /// Reaching `maxConcurrentStreams` is logged and counted once.
    var streamLimitReported = false
    var rapidResetGuard: RapidResetGuard
    /// Set inside mem_recv when the connection must go (GOAWAY queued).
    var terminating = false

    /// Streams with new data (or finish) since the last wake-up; any thread
    /// adds, the loop drains. One loop task per batch, not per write.
    struct ReadyStreams {
        var ids: [Int32] = []
        var scheduled = false
    }
    let ready = Mutex(ReadyStreams())

    static let outHighWater = 64 * 1024
    static let discardCap = 64 << 20

    init(
        fd: Int32, token: UInt64, loop: EventLoop, context: FrontContext, remoteAddress: String,
        tls: TLSSession? = nil, slot: ConnectionSlot
    ) {
        self.slot = slot
        self.fd = fd
        self.io = SocketIO(fd: fd, tls: tls)
        self.token = token
        self.loop = loop
        self.context = context
        self.remoteAddress = remoteAddress
        self.lastActivityMs = UInt64(MonotonicClock.nowMs())
        rapidResetGuard = RapidResetGuard(
            burst: context.configuration.earlyResetBurst,
            perSecond: context.configuration.earlyResetsPerSecond,
            nowMs: lastActivityMs)
        LiveCount.http2Connections.add(1)
    }

    deinit { LiveCount.http2Connections.add(-1) }

    /// Creates the nghttp2 session and queues our SETTINGS. False on failure.
    func start() -> Bool {
        var cbs: OpaquePointer?
        guard nghttp2_session_callbacks_new(&cbs) == 0, let cbs else { return false }
        defer { nghttp2_session_callbacks_del(cbs) }
        setFrameCallbacks(cbs)
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
        // not yet answered (RapidResetGuard); nghttp2's stays as a backstop
        // sized to the stream limit.
        let streamLimit = UInt64(max(1, context.configuration.maxConcurrentStreams))
        nghttp2_option_set_stream_reset_rate_limit(opt, streamLimit + 1000, max(1000, streamLimit / 10))
        var s: OpaquePointer?
        // Unretained: the session never outlives this object (deleted in close()).
        guard nghttp2_session_server_new2(&s, cbs, Unmanaged.passUnretained(self).toOpaque(), opt) == 0,
            let s
        else {
            return false
        }
        session = s
        let none = UInt8(NGHTTP2_FLAG_NONE.rawValue)
        var settings = [
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                value: UInt32(clamping: context.configuration.maxConcurrentStreams)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: 1 << 20),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                value: UInt32(clamping: context.configuration.maxHeaderBytes))
        ]
        guard nghttp2_submit_settings(s, none, &settings, settings.count) == 0 else {
            return false
        }
        // The connection window is not covered by SETTINGS; raise it so many
        // concurrent uploads are not throttled by the 64 KiB default.
        _ = nghttp2_session_set_local_window_size(s, none, 0, 16 << 20)
        return true
    }

    /// The connection behind nghttp2's `user_data`.
    static func from(_ user: UnsafeMutableRawPointer) -> HTTP2Connection {
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
            switch apply(.deadline, to: stream) {
            case .closeConnection:
                context.logger.debug("h2 \(remoteAddress): header block not complete within the request timeout")
                _ = nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR.rawValue)
                flush()
                close()
                return
            case let .answer(answer):
                answerEarly(stream, answer)
                stream.receiveDeadlineMs = nowMs + periodMs
            case let .reset(code):
                reset(stream, code)
            default:
                break
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
            _ = nghttp2_submit_goaway(
                session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
                nghttp2_session_get_last_proc_stream_id(session),
                NGHTTP2_NO_ERROR.rawValue, nil, 0)
        } else {
            _ = nghttp2_session_terminate_session(session, NGHTTP2_NO_ERROR.rawValue)
        }
        flush()  // best effort: whatever fits into the socket buffer now
        close()  // ends the remaining streams (onClose handlers run)
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
}
