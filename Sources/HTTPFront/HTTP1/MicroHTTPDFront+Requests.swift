import CLinux
import CMicroHTTPD

// The HTTP/1.x request path: MHD's access handler collects a request, hands
// it to the handler and queues the answer (suspending the connection while
// the handler works elsewhere).
extension MicroHTTPDFront {
    func access(
        _ connection: OpaquePointer, _ method: UnsafePointer<CChar>?,
        _ uploadData: UnsafePointer<CChar>?, _ uploadDataSize: UnsafeMutablePointer<Int>,
        _ conCls: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    ) -> MHD_Result {
        let req: MHDRequest
        if let raw = conCls.pointee {
            req = Unmanaged<MHDRequest>.fromOpaque(raw).takeUnretainedValue()
        } else {
            // No URI callback ran (should not happen); create the context here.
            req = MHDRequest(rawURI: "/")
            conCls.pointee = Unmanaged.passRetained(req).toOpaque()
        }
        let limit = context.configuration.maxBodyBytes

        switch req.phase {
        case .new:
            req.phase = .receiving
            req.delivery.state.withLock { $0.connection = MHDConnectionHandle(raw: connection) }
            collectHeaders(connection, into: req)
            // MHD's memory pool bounds the header block roughly (431 past
            // it); this makes the configured limit exact.
            let maxHeaderBytes = context.configuration.maxHeaderBytes
            let headerBytes = req.headers.reduce(req.rawURI.utf8.count + 16) {
                $0 + $1.name.utf8.count + $1.value.utf8.count + 4
            }
            if headerBytes > maxHeaderBytes {
                req.phase = .done
                requestReceived(connection)
                return queue(
                    connection, .text(431, "request headers exceed the limit of \(maxHeaderBytes) bytes"),
                    close: true)
            }
            req.declaredLength = req.headers.first(where: { $0.name == "content-length" })
                .flatMap { Int($0.value.trimmingCharacters(in: " \t")) }
            if req.headers.contains(where: { $0.name == "transfer-encoding" }) {
                req.chunked = true
                req.declaredLength = nil
            }
            quickAckIfBodyPending(connection, req)
            if let n = req.declaredLength, n > limit {
                // Queued before the body is read: MHD skips the body (no
                // 100-continue) and closes the connection afterwards.
                req.phase = .done
                requestReceived(connection)
                return queue(connection, tooLargeResponse(limit), close: true)
            }
            return .YES

        case .receiving:
            let size = uploadDataSize.pointee
            if size > 0 {
                if req.declaredLength.map({ req.body.count + size < $0 }) ?? true {
                    kv_mhd_quickack(connection)  // more of the body to come
                }
                if !req.tooLarge {
                    if req.body.count + size > limit {
                        // Over the limit mid-upload (chunked): MHD cannot answer
                        // before the upload ends, so discard the rest unbuffered.
                        req.tooLarge = true
                        req.body = []
                    } else if let uploadData {
                        uploadData.withMemoryRebound(to: UInt8.self, capacity: size) {
                            req.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: size))
                        }
                    }
                }
                uploadDataSize.pointee = 0
                return .YES
            }
            requestReceived(connection)
            if req.tooLarge {
                req.phase = .done
                return queue(connection, tooLargeResponse(limit), close: true)
            }
            return dispatch(connection, req, method: method.map { String(cString: $0) } ?? "GET")

        case .waiting:
            // Called again after MHD_resume_connection: the response is there.
            guard let response = req.delivery.state.withLock({ $0.response }) else {
                // Only a resume brings us here and resume follows deliver(),
                // so this is defensive: wait again.
                return respondOrSuspend(connection, req)
            }
            untrack(req.delivery)
            req.phase = .done
            return queue(connection, response, close: false)

        case .done:
            return .YES
        }
    }

    /// A client with Nagle on sends a small body only once its header
    /// segment is ACKed, and Linux may delay that ACK by 40 ms: ACK at once
    /// when the body is still missing. When it has arrived (TCP_INFO's byte
    /// count covers it) the response carries the ACK, and a pure ACK per
    /// request would cost ~15 % of a point read's throughput.
    private func quickAckIfBodyPending(_ connection: OpaquePointer, _ req: MHDRequest) {
        let header = UInt64(kv_mhd_request_header_size(connection))
        let length = UInt64(max(0, req.declaredLength ?? 0))
        let conn = mhdConnection(connection)
        guard let conn, header > 0, !req.chunked else {
            conn?.timing.withLock { $0.byteCountKnown = false }
            req.wireBytes = 0
            kv_mhd_quickack(connection)
            return
        }
        req.wireBytes = header + length
        if length == 0 { return }  // complete: nothing for the client to hold back
        let (known, consumed) = conn.timing.withLock { ($0.byteCountKnown, $0.consumedBytes) }
        var received: UInt64 = 0
        if known, kv_tcp_bytes_received(conn.fd, &received) == 0, received >= consumed &+ header &+ length {
            return
        }
        kv_mhd_quickack(connection)
    }

    private func dispatch(_ connection: OpaquePointer, _ req: MHDRequest, method: String) -> MHD_Result {
        let (path, query) = splitPathAndQuery(req.rawURI)
        let request = HTTPRequest(
            method: method, path: path, query: query, headers: req.headers,
            body: req.body, version: .http1_1,
            remoteAddress: mhdConnection(connection)?.remoteAddress ?? "")
        req.body = []
        req.phase = .waiting
        let delivery = req.delivery
        context.handler.handle(request) { response in delivery.deliver(response) }
        return respondOrSuspend(connection, req)
    }

    /// Queues the response if it is there already (answered inline, or from
    /// another thread meanwhile); otherwise suspends the connection until
    /// `deliver` resumes it.
    private func respondOrSuspend(_ connection: OpaquePointer, _ req: MHDRequest) -> MHD_Result {
        enum Next { case respond(HTTPResponse), shuttingDown, suspended }
        let delivery = req.delivery
        let next = delivery.state.withLock { s -> Next in
            if let response = s.response { return .respond(response) }
            // stop() already collected the waiting requests; do not suspend.
            guard track(delivery) else { return .shuttingDown }
            s.suspended = true
            MHD_suspend_connection(connection)
            return .suspended
        }
        switch next {
        case let .respond(response):
            req.phase = .done
            return queue(connection, response, close: false)
        case .shuttingDown:
            req.phase = .done
            return queue(connection, .text(503, "server shutting down"), close: true)
        case .suspended:
            return .YES
        }
    }

    private func tooLargeResponse(_ limit: Int) -> HTTPResponse {
        .text(413, "request body exceeds the limit of \(limit) bytes")
    }

    private func queue(_ connection: OpaquePointer, _ response: HTTPResponse, close: Bool) -> MHD_Result {
        if let start = response.stream {
            return queueStream(connection, response, start: start)
        }
        let mhdResponse: OpaquePointer? = response.body.withUnsafeBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else {
                return MHD_create_response_from_buffer(0, nil, .RESPMEM_PERSISTENT)
            }
            return MHD_create_response_from_buffer(
                raw.count, UnsafeMutableRawPointer(mutating: base),
                .RESPMEM_MUST_COPY)
        }
        guard let mhdResponse else { return .NO }
        defer { MHD_destroy_response(mhdResponse) }
        for (name, value) in response.headers {
            switch name.lowercased() {
            case "content-length", "transfer-encoding": continue  // MHD sets these
            default: _ = MHD_add_response_header(mhdResponse, name, value)
            }
        }
        if close { _ = MHD_add_response_header(mhdResponse, "Connection", "close") }
        return MHD_queue_response(connection, UInt32(response.status), mhdResponse)
    }

    /// A chunked response fed by an HTTPResponseStream. MHD's reader runs on
    /// this connection's MHD thread and suspends the connection when the
    /// queue is empty; write/finish resume it. No thread waits per stream.
    private func queueStream(
        _ connection: OpaquePointer, _ response: HTTPResponse,
        start: @Sendable (HTTPResponseStream) -> Void
    ) -> MHD_Result {
        let stream = HTTPResponseStream(transport: .mhd(MHDConnectionHandle(raw: connection)))
        let key = ObjectIdentifier(stream)
        let tracked = state.withLock {
            if $0.stopping { return false }
            $0.openStreams[key] = stream
            return true
        }
        if tracked {
            stream.onClose { [weak self] in self?.state.withLock { _ = $0.openStreams.removeValue(forKey: key) } }
        } else {
            stream.finish()  // stopping: send the headers and end at once
        }
        // The response holds one reference, released by the free callback
        // (when MHD is done with the response: completed, failed or closed).
        let cls = Unmanaged.passRetained(stream).toOpaque()
        let mhdResponse = kv_mhd_create_stream_response(
            16 * 1024,
            { cls, _, buf, max in
                guard let cls, let buf else { return MHDConnectionHandle.readerEndWithError }
                let stream = Unmanaged<HTTPResponseStream>.fromOpaque(cls).takeUnretainedValue()
                return stream.readMHD(into: UnsafeMutableRawPointer(buf), max: max)
            }, cls,
            { cls in
                guard let cls else { return }
                Unmanaged<HTTPResponseStream>.fromOpaque(cls).takeRetainedValue().transportEnded()
            })
        guard let mhdResponse else {
            Unmanaged<HTTPResponseStream>.fromOpaque(cls).release()
            stream.transportEnded()
            start(stream)
            return .NO
        }
        for (name, value) in response.headers {
            switch name.lowercased() {
            case "content-length", "transfer-encoding", "connection": continue  // MHD sets these
            default: _ = MHD_add_response_header(mhdResponse, name, value)
            }
        }
        let rc = MHD_queue_response(connection, UInt32(response.status), mhdResponse)
        // Drops our reference; on failure this was the last one and the free
        // callback ends the stream.
        MHD_destroy_response(mhdResponse)
        start(stream)
        return rc
    }

    private func collectHeaders(_ connection: OpaquePointer, into req: MHDRequest) {
        _ = MHD_get_connection_values(
            connection, .HEADER_KIND,
            { cls, _, key, value in
                guard let cls, let key else { return .YES }
                let req = Unmanaged<MHDRequest>.fromOpaque(cls).takeUnretainedValue()
                req.headers.append(
                    (
                        name: String(cString: key).lowercased(),
                        value: value.map { String(cString: $0) } ?? ""
                    ))
                return .YES
            }, Unmanaged.passUnretained(req).toOpaque())
    }
}

private extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
