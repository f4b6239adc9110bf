import CNGHTTP2
import Glibc

// Requests to the handler and responses back: HEADERS, the body's data
// provider, and the wake-ups of streaming responses.
extension HTTP2Connection {
    /// Hands a complete request to the handler; its answer comes back on the loop thread.
    func dispatch(_ stream: HTTP2Stream) {
        let (path, query) = splitPathAndQuery(stream.rawPath)
        let request = HTTPRequest(
            method: stream.method, path: path, query: query,
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
                    HTTPResponseStream.startClosed(start)  // server stopping
                }
            }
        }
    }

    /// Queues the handler's response on a stream; ignored when the stream or
    /// connection is gone.
    func submit(_ streamId: Int32, _ response: HTTPResponse) {
        guard !closed, session != nil, let stream = streams[streamId],
            apply(.responseStarted, to: stream) == .sendResponse
        else {
            // Client reset the stream or left: a streaming producer still
            // learns about it (closed stream, onClose runs at once).
            if let start = response.stream { HTTPResponseStream.startClosed(start) }
            return
        }
        submitResponse(stream, response)
    }

    /// Queues HEADERS (and the body's data provider) for a response.
    func submitResponse(_ stream: HTTP2Stream, _ response: HTTPResponse) {
        guard let session else {
            if let start = response.stream { HTTPResponseStream.startClosed(start) }
            return
        }
        let streamId = stream.id
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
            cStrings.append(n)
            cStrings.append(v)
            nva.append(
                nghttp2_nv(
                    name: UnsafeMutableRawPointer(n).assumingMemoryBound(to: UInt8.self),
                    value: UnsafeMutableRawPointer(v).assumingMemoryBound(to: UInt8.self),
                    namelen: strlen(n), valuelen: strlen(v), flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
        }
        let rv: Int32
        if response.body.isEmpty && !streaming {
            rv = nghttp2_submit_response(session, streamId, nva, nva.count, nil)
            _ = apply(.responseEnded, to: stream)  // END_STREAM on the HEADERS frame
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

    private func readBody(
        _ streamId: Int32, _ buf: UnsafeMutablePointer<UInt8>, _ length: Int,
        _ dataFlags: UnsafeMutablePointer<UInt32>
    ) -> Int {
        guard let stream = streams[streamId] else {
            return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        if let rs = stream.responseStream {
            switch rs.read(into: buf, max: length) {
            case let .data(n, eof):
                if eof {
                    dataFlags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                    _ = apply(.responseEnded, to: stream)
                }
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
            _ = apply(.responseEnded, to: stream)
            stream.responseBody = []
            stream.responseOffset = 0
        }
        return n
    }

    // MARK: streaming responses

    /// Any thread: stream `id` has new bytes or was finished. Coalesced into
    /// one loop task per batch.
    func streamReady(_ id: Int32) {
        let post = ready.withLock { r -> Bool in
            r.ids.append(id)
            defer { r.scheduled = true }
            return !r.scheduled
        }
        // Refused only when the loop stops; shutdown() then ends the streams.
        if post { loop.execute { [self] in resumeReadyStreams() } }
    }

    private func resumeReadyStreams() {
        let ids = ready.withLock { r -> [Int32] in
            let ids = r.ids
            r.ids.removeAll(keepingCapacity: true)
            r.scheduled = false
            return ids
        }
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
}
