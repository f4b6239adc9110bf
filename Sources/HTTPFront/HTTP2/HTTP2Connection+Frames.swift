import Threading
import CNGHTTP2

// nghttp2's frame callbacks (run inside mem_recv): requests are collected
// per stream, limits and budgets checked, complete requests dispatched.
// What each event means for a stream is decided by HTTP2StreamState.
extension HTTP2Connection {
    func setFrameCallbacks(_ cbs: OpaquePointer) {
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
            HTTP2Connection.from(user).onStreamClose(streamId)
            return 0
        }
    }

    /// Applies a stream event, keeping `unansweredStreams` in step.
    func apply(_ event: HTTP2StreamState.Event, to stream: HTTP2Stream) -> HTTP2StreamState.Action {
        let wasAnswered = stream.state.isAnswered
        let action = stream.state.apply(event)
        if !wasAnswered && stream.state.isAnswered { unansweredStreams -= 1 }
        return action
    }

    private func isRequestHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Bool {
        frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue)
            && frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST
    }

    private func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        guard isRequestHeaders(frame) else { return 0 }
        let id = frame.pointee.hd.stream_id
        let stream = HTTP2Stream(id: id)
        stream.receiveDeadlineMs =
            UInt64(MonotonicClock.nowMs()) + UInt64(max(1, context.configuration.requestTimeoutSeconds)) * 1000
        if let replaced = streams.updateValue(stream, forKey: id), !replaced.state.isAnswered {
            unansweredStreams -= 1
        }
        unansweredStreams += 1
        receiving[id] = stream
        let limit = context.configuration.maxConcurrentStreams
        if streams.count >= limit && !streamLimitReported {
            // The client now queues further requests (Deno: every request
            // of the Deno.Kv handle) until a stream ends: say why, once.
            streamLimitReported = true
            LiveCount.http2StreamLimitReached.add(1)
            let why = "(http2_max_concurrent_streams); the client waits for a stream to end before its next request"
            context.logger.notice("h2 \(remoteAddress): reached the stream limit of \(limit) concurrent streams \(why)")
        }
        return 0
    }

    private func onHeader(
        _ frame: UnsafePointer<nghttp2_frame>,
        _ name: UnsafePointer<UInt8>, _ namelen: Int,
        _ value: UnsafePointer<UInt8>, _ valuelen: Int
    ) -> Int32 {
        guard frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
            let stream = streams[frame.pointee.hd.stream_id]
        else { return 0 }
        // RFC 9113 §6.5.2 accounting; a flood of tiny (indexed) fields counts too.
        let cost = namelen + valuelen + 32
        stream.headerBytes += cost
        let overLimit = stream.headerBytes > context.configuration.maxHeaderBytes
        switch apply(.headerField(overLimit: overLimit), to: stream) {
        case .storeHeader: break
        case .dropHeaders:
            bufferedRequestBytes -= stream.bufferedHeaderBytes
            stream.bufferedHeaderBytes = 0
            stream.headers = []
            return 0
        default:
            return 0  // keep decoding (HPACK state), store nothing
        }
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
                _ = apply(.declaredBodyTooLarge, to: stream)
            }
        }
        return 0
    }

    private func onFrameRecv(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        // A complete frame (any type) is activity; bytes trickling in without
        // completing one are not, so they cannot hold an idle connection.
        lastActivityMs = UInt64(MonotonicClock.nowMs())
        let type = frame.pointee.hd.type
        if type == UInt8(NGHTTP2_RST_STREAM.rawValue) {
            // Called before nghttp2 closes the stream.
            if let stream = streams[frame.pointee.hd.stream_id],
                apply(.resetByPeer, to: stream) == .countEarlyReset
            {
                noteEarlyReset()
            }
            return 0
        }
        guard type == UInt8(NGHTTP2_HEADERS.rawValue) || type == UInt8(NGHTTP2_DATA.rawValue),
            let stream = streams[frame.pointee.hd.stream_id]
        else { return 0 }
        if isRequestHeaders(frame), case let .answer(answer) = apply(.headerBlockComplete, to: stream) {
            // Answered before the body arrives; the rest of it is ignored.
            answerEarly(stream, answer)
        }
        if frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0 {
            receiving[stream.id] = nil
            if apply(.endStream, to: stream) == .dispatch { dispatch(stream) }
        }
        return 0
    }

    private func onDataChunk(_ streamId: Int32, _ data: UnsafePointer<UInt8>, _ len: Int) -> Int32 {
        guard let stream = streams[streamId] else { return 0 }
        let overBodyLimit = stream.body.count + len > context.configuration.maxBodyBytes
        switch apply(.data(overBodyLimit: overBodyLimit), to: stream) {
        case .storeData:
            if bufferedRequestBytes + len > context.configuration.maxBufferedRequestBytesPerConnection {
                refuseOverBudget(stream)
                return 0
            }
            bufferedRequestBytes += len
            stream.body.append(contentsOf: UnsafeBufferPointer(start: data, count: len))
        case let .answer(answer):
            answerEarly(stream, answer)
        case .discardData:
            // Past a cap, stop the upload so a client cannot stream forever.
            stream.discardedBytes += len
            if stream.discardedBytes > HTTP2Connection.discardCap,
                case let .reset(code) = apply(.discardLimitExceeded, to: stream)
            {
                reset(stream, code)
            }
        default:
            break
        }
        return 0
    }

    /// Finished, reset by the client (RST_STREAM) or refused: a streaming
    /// response ends here and runs its onClose handlers.
    private func onStreamClose(_ streamId: Int32) {
        let stream = streams.removeValue(forKey: streamId)
        if let stream {
            if !stream.state.isAnswered { unansweredStreams -= 1 }
            receiving[streamId] = nil
            dropRequest(stream)
        }
        stream?.responseStream?.transportEnded()
    }

    /// A client RST_STREAM on a stream not answered yet: rapid reset
    /// (CVE-2023-44487). When the guard's budget is spent, GOAWAY
    /// ENHANCE_YOUR_CALM.
    private func noteEarlyReset() {
        if rapidResetGuard.allowReset(nowMs: UInt64(MonotonicClock.nowMs())) { return }
        guard !terminating, let session else { return }
        terminating = true
        LiveCount.http2RapidResetCloses.add(1)
        let c = context.configuration
        let limit = "\(c.earlyResetBurst) streams (then \(c.earlyResetsPerSecond)/s)"
        let action = "closing with ENHANCE_YOUR_CALM"
        context.logger.notice(
            "h2 \(remoteAddress): more than \(limit) reset before their response (rapid reset); \(action)")
        _ = nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM.rawValue)
    }

    // MARK: the buffered request

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
        guard let session, apply(.bufferBudgetExceeded, to: stream) == .refuse else { return }
        context.logger.debug("h2 \(remoteAddress): buffered request bytes over the per-connection limit")
        dropRequest(stream)
        _ = nghttp2_submit_rst_stream(
            session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id,
            NGHTTP2_ENHANCE_YOUR_CALM.rawValue)
    }

    /// Answers a request before it reached the handler (408, 413, 431).
    func answerEarly(_ stream: HTTP2Stream, _ answer: HTTP2StreamState.EarlyAnswer) {
        dropRequest(stream)
        let c = context.configuration
        switch answer {
        case .timedOut:
            submitResponse(stream, .text(408, "request not complete within \(c.requestTimeoutSeconds) s"))
        case .bodyTooLarge:
            submitResponse(stream, .text(413, "request body exceeds the limit of \(c.maxBodyBytes) bytes"))
        case .headersTooLarge:
            submitResponse(stream, .text(431, "request headers exceed the limit of \(c.maxHeaderBytes) bytes"))
        }
    }

    /// RST_STREAM on a stream we answered but whose upload goes on.
    func reset(_ stream: HTTP2Stream, _ code: HTTP2StreamState.ResetCode) {
        guard let session else { return }
        let error = code == .cancel ? NGHTTP2_CANCEL.rawValue : NGHTTP2_NO_ERROR.rawValue
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, error)
    }
}
