import Threading
import CLinux
import CMicroHTTPD
import Glibc
import Logging

/// Per-request state for the HTTP/1.x path. Created by MHD's URI log callback
/// (which sees the raw, undecoded URI incl. query), retained in `*con_cls`,
/// released in the request-completed callback.
final class MHDRequest: @unchecked Sendable {
    enum Phase { case new, receiving, waiting, done }

    let rawURI: String
    // Touched only on the MHD thread that owns the connection.
    var phase: Phase = .new
    var headers: [(name: String, value: String)] = []
    var body: [UInt8] = []
    var tooLarge = false
    /// Content-Length (nil: none or chunked), whether the body is chunked,
    /// and this request's bytes on the wire.
    var declaredLength: Int?
    var chunked = false
    var wireBytes: UInt64 = 0

    // Shared with whichever thread calls respond; protected by `lock`.
    let lock = NSLockLite()
    var response: HTTPResponse?
    var suspended = false
    var completed = false
    var connection: OpaquePointer?

    init(rawURI: String) {
        self.rawURI = rawURI
        LiveCount.mhdRequests.add(1)
    }

    deinit { LiveCount.mhdRequests.add(-1) }

    /// Stores the response and wakes a suspended connection. Harmless when
    /// called twice or after the connection is gone.
    func deliver(_ r: HTTPResponse, front: MicroHTTPDFront) {
        lock.lock()
        guard !completed, response == nil else {
            lock.unlock()
            // Client gone: a streaming producer still gets its (closed) stream.
            if let start = r.stream { HTTPResponseStream.startClosed(start) }
            return
        }
        defer { lock.unlock() }
        response = r
        if suspended, let connection {
            suspended = false
            // Under our lock, so it can never overtake the suspend call in
            // the access handler.
            MHD_resume_connection(connection)
        }
    }
}

/// One libmicrohttpd connection as the front sees it: its connection slot
/// (released when MHD closes the socket) and the request deadline the reaper
/// enforces. `deadlineMs` and `expired` are protected by the front's `connLock`.
final class MHDConnection {
    let fd: Int32
    let slot: ConnectionSlot?
    /// 0 = no deadline (request complete, handler or response running).
    var deadlineMs: UInt64
    /// When the request now being received began; 0 = none in progress.
    var receivingSinceMs: UInt64
    var expired = false
    /// Bytes of the requests completed on this connection (header blocks and
    /// Content-Length bodies), to tell from TCP_INFO whether the current
    /// body has arrived; false after a body of unknown wire size (chunked).
    /// Touched only on the connection's MHD thread.
    var consumedBytes: UInt64 = 0
    var byteCountKnown = true
    /// The client's "ip:port", formatted once per connection.
    let remoteAddress: String

    init(fd: Int32, slot: ConnectionSlot?, deadlineMs: UInt64, receivingSinceMs: UInt64, remoteAddress: String) {
        self.remoteAddress = remoteAddress
        self.fd = fd
        self.slot = slot
        self.deadlineMs = deadlineMs
        self.receivingSinceMs = receivingSinceMs
    }
}

/// libmicrohttpd daemon without a listen socket: it gets HTTP/1.x sockets
/// from the sniffer via MHD_add_connection and runs its own poll() threads.
final class MicroHTTPDFront: @unchecked Sendable {
    private let context: FrontContextCore
    private var daemon: OpaquePointer?
    private let lock = NSLockLite()
    private var stopping = false
    private var suspendedRequests: [ObjectIdentifier: MHDRequest] = [:]
    /// Streaming responses not ended yet (finished by stop()).
    private var openStreams: [ObjectIdentifier: HTTPResponseStream] = [:]

    // Connection tracking for limits and request timeouts. `connLock` also
    // orders the reaper's writes to a socket before MHD's close of it (MHD
    // notifies CLOSED before it closes the fd).
    private let connLock = NSLockLite()
    /// Slots of sockets handed to MHD_add_connection whose STARTED
    /// notification has not run yet, by fd.
    private var pendingSlots: [Int32: ConnectionSlot] = [:]
    private var connections: [ObjectIdentifier: MHDConnection] = [:]
    private var reaper: JoinableThread?
    private var reaperStopFd: Int32 = -1
    private var reaperRound = 0

    init(context: FrontContextCore) {
        self.context = context
    }

    private var requestTimeoutMs: UInt64 { UInt64(max(1, context.configuration.requestTimeoutSeconds)) * 1000 }
    private var idleTimeoutMs: UInt64 { UInt64(max(1, context.configuration.idleTimeoutSeconds)) * 1000 }

    /// The memory pool of one MHD connection: the request header block
    /// (read buffer plus MHD's ~50 bytes of bookkeeping per field) and the
    /// response header. A block that does not fit gets 431 (414 for the
    /// request line): a block of `maxHeaderBytes` in a few fields fits, one
    /// of very many tiny fields is refused earlier. Kept small on purpose:
    /// libmicrohttpd zeroes the whole pool after every request (CPU) and so
    /// keeps it resident (RSS per idle connection: 16 KiB limit → 32 KiB).
    static func memoryLimit(maxHeaderBytes: Int) -> Int {
        max(8 * 1024, maxHeaderBytes) * 3 / 2 + 8 * 1024
    }

    func start() throws {
        let me = Unmanaged.passUnretained(self).toOpaque()
        let d = kv_mhd_start_daemon(
            UInt32(max(1, context.configuration.ioThreads)),
            UInt32(max(1, context.configuration.idleTimeoutSeconds)),
            100_000,
            { cls, connection, _, method, _, uploadData, uploadDataSize, conCls in
                let front = Unmanaged<MicroHTTPDFront>.fromOpaque(cls!).takeUnretainedValue()
                return front.access(connection!, method, uploadData, uploadDataSize!, conCls!)
            }, me,
            { cls, connection, conCls, _ in
                if let cls, let connection {
                    let wire = conCls?.pointee.map { Unmanaged<MHDRequest>.fromOpaque($0).takeUnretainedValue().wireBytes }
                    Unmanaged<MicroHTTPDFront>.fromOpaque(cls).takeUnretainedValue().requestFinished(connection, wireBytes: wire)
                }
                // Request finished (sent, failed or client gone): drop our context.
                // Also the only reliable end for a resumed request: MHD may
                // close a resumed connection whose client left without calling
                // the access handler again.
                guard let cls, let conCls, let raw = conCls.pointee else { return }
                conCls.pointee = nil
                let front = Unmanaged<MicroHTTPDFront>.fromOpaque(cls).takeUnretainedValue()
                let req = Unmanaged<MHDRequest>.fromOpaque(raw).takeRetainedValue()
                front.untrack(req)
                req.lock.lock()
                req.completed = true
                req.connection = nil
                req.lock.unlock()
            }, me,
            { cls, uri, connection in
                // The request line is complete: a new request began.
                if let cls, let connection {
                    Unmanaged<MicroHTTPDFront>.fromOpaque(cls).takeUnretainedValue().requestBegan(connection)
                }
                let req = MHDRequest(rawURI: uri.map { String(cString: $0) } ?? "/")
                return Unmanaged.passRetained(req).toOpaque()
            }, me,
            MicroHTTPDFront.memoryLimit(maxHeaderBytes: context.configuration.maxHeaderBytes),
            { cls, connection, socketContext, code in
                guard let cls, let connection, let socketContext else { return }
                let front = Unmanaged<MicroHTTPDFront>.fromOpaque(cls).takeUnretainedValue()
                if code == .CONNECTION_NOTIFY_STARTED {
                    front.connectionStarted(connection, socketContext)
                } else {
                    front.connectionClosed(socketContext)
                }
            }, me)
        guard let d else { throw HTTPServerError.microhttpd("MHD_start_daemon failed") }
        daemon = d
        reaperStopFd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        let stopFd = reaperStopFd
        reaper = try JoinableThread(name: "http1-reaper") { [self] in
            var pfd = pollfd(fd: stopFd, events: Int16(POLLIN), revents: 0)
            while true {
                pfd.revents = 0
                if poll(&pfd, 1, 100) != 0 && (pfd.revents != 0 || errno != EINTR) { break }
                reapExpired(nowMs: SocketOptions.nowMs())
            }
        }
    }

    // MARK: connections, limits, request timeouts

    private func connectionStarted(_ connection: OpaquePointer,
                                   _ socketContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>) {
        let fd = kv_mhd_connection_fd(connection)
        connLock.lock()
        let slot = pendingSlots.removeValue(forKey: fd)
        // The first request's clock started at accept.
        let start = slot?.acceptedMs ?? SocketOptions.nowMs()
        var buf = [CChar](repeating: 0, count: 64)
        _ = kv_mhd_client_address(connection, &buf, buf.count)
        let conn = MHDConnection(fd: fd, slot: slot, deadlineMs: start + requestTimeoutMs, receivingSinceMs: start,
                                 remoteAddress: cString(buf))
        connections[ObjectIdentifier(conn)] = conn
        connLock.unlock()
        socketContext.pointee = Unmanaged.passRetained(conn).toOpaque()
    }

    private func connectionClosed(_ socketContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>) {
        guard let raw = socketContext.pointee else { return }
        socketContext.pointee = nil
        let conn = Unmanaged<MHDConnection>.fromOpaque(raw).takeRetainedValue()
        connLock.withLock { _ = connections.removeValue(forKey: ObjectIdentifier(conn)) }
        conn.slot?.release()
    }

    private func mhdConnection(_ connection: OpaquePointer) -> MHDConnection? {
        guard let raw = kv_mhd_socket_context(connection) else { return nil }
        return Unmanaged<MHDConnection>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Request line received: the request must be complete within the
    /// request timeout (never later than a deadline already running).
    private func requestBegan(_ connection: OpaquePointer) {
        guard let conn = mhdConnection(connection) else { return }
        let now = SocketOptions.nowMs()
        let limit = now + requestTimeoutMs
        connLock.withLock {
            conn.deadlineMs = conn.deadlineMs == 0 ? limit : min(conn.deadlineMs, limit)
            if conn.receivingSinceMs == 0 { conn.receivingSinceMs = now }
        }
    }

    /// Headers and body are in: no deadline while the handler and the
    /// response (streaming or not) run.
    private func requestReceived(_ connection: OpaquePointer) {
        guard let conn = mhdConnection(connection) else { return }
        connLock.withLock { conn.deadlineMs = 0; conn.receivingSinceMs = 0 }
    }

    /// Response done, keep-alive: the next request may start any time in
    /// the idle period (MHD closes a silent connection after it), and must
    /// then complete within the request timeout.
    private func requestFinished(_ connection: OpaquePointer, wireBytes: UInt64?) {
        guard let conn = mhdConnection(connection) else { return }
        if let wireBytes { conn.consumedBytes &+= wireBytes } else { conn.byteCountKnown = false }
        let limit = SocketOptions.nowMs() + idleTimeoutMs + requestTimeoutMs
        connLock.withLock { conn.deadlineMs = limit; conn.receivingSinceMs = 0 }
    }

    /// Answers 408 on connections whose request is overdue and shuts their
    /// socket down; MHD sees EOF and closes the connection itself.
    private func reapExpired(nowMs: UInt64) {
        connLock.lock()
        defer { connLock.unlock() }
        // A client that half-closed (FIN) in the middle of a request can never
        // complete it, and libmicrohttpd 0.9.75 keeps such a connection until
        // its own timeout: close it. Only requests older than 500 ms are
        // checked (normal ones are complete by then), all in one poll().
        // Once a second, idle keep-alive connections too: a client that sent
        // its request with FIN and left would otherwise hold the connection
        // for the whole idle timeout.
        reaperRound &+= 1
        let checkIdle = reaperRound % 10 == 0
        var candidates: [MHDConnection] = []
        for conn in connections.values where !conn.expired && conn.deadlineMs != 0 {
            if conn.receivingSinceMs != 0 ? nowMs &- conn.receivingSinceMs >= 500 : checkIdle {
                candidates.append(conn)
            }
        }
        if !candidates.isEmpty {
            var pfds = candidates.map { pollfd(fd: $0.fd, events: Int16(0x2000) /* POLLRDHUP */, revents: 0) }
            if poll(&pfds, nfds_t(pfds.count), 0) > 0 {
                let gone = Int16(0x2000) /* POLLRDHUP */ | Int16(POLLHUP) | Int16(POLLERR)
                for (i, conn) in candidates.enumerated() where pfds[i].revents & gone != 0 {
                    conn.expired = true
                    _ = Glibc.shutdown(conn.fd, Int32(SHUT_RDWR))
                }
            }
        }
        for conn in connections.values where !conn.expired && conn.deadlineMs != 0 && nowMs >= conn.deadlineMs {
            conn.expired = true
            // Nothing of a response was written yet (the request is not
            // complete), so this is the whole answer on the wire.
            let body = "request not complete within \(context.configuration.requestTimeoutSeconds) s\n"
            let text = "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Connection: close\r\n\r\n" + body
            _ = Array(text.utf8).withUnsafeBytes {
                send(conn.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            _ = Glibc.shutdown(conn.fd, Int32(SHUT_RDWR))
        }
    }

    /// Open MHD connections (tests).
    var connectionCount: Int { connLock.withLock { connections.count } }

    /// Takes ownership of `fd` (MHD closes it, also on failure) and of
    /// `slot` (released when MHD closes the connection).
    func addConnection(fd: Int32, address: sockaddr_storage, length: socklen_t, slot: ConnectionSlot) {
        lock.lock()
        let d = stopping ? nil : daemon
        lock.unlock()
        guard let d else { SocketOptions.close(fd); slot.release(); return }
        // A stale entry for this fd number belonged to a socket that is
        // closed by now (the number was reused): release it.
        let stale = connLock.withLock { () -> ConnectionSlot? in
            let old = pendingSlots[fd]
            pendingSlots[fd] = slot
            return old
        }
        stale?.release()
        var addr = address
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { MHD_add_connection(d, fd, $0, length) }
        }
        if rc != MHD_Result.YES {
            context.logger.warning("MHD_add_connection failed: \(String(cString: strerror(errno)))")
            // Still pending = MHD never started the connection (closed the fd).
            connLock.withLock { () -> ConnectionSlot? in
                guard pendingSlots[fd] === slot else { return nil }
                return pendingSlots.removeValue(forKey: fd)
            }?.release()
        }
    }

    /// Answers every request still waiting for the handler with 503 so MHD
    /// can shut down (it must not be stopped with suspended connections),
    /// then stops the daemon and its threads.
    func stop() {
        lock.lock()
        stopping = true
        let d = daemon
        daemon = nil
        let waiting = Array(suspendedRequests.values)
        let streams = Array(openStreams.values)
        lock.unlock()
        guard let d else { return }
        if reaper != nil {
            var one: UInt64 = 1
            _ = write(reaperStopFd, &one, 8)
            reaper?.join()
            reaper = nil
            SocketOptions.close(reaperStopFd)
        }
        for req in waiting { req.deliver(.text(503, "server shutting down"), front: self) }
        // Streams end with their last chunk once drained. finish() also
        // resumes a connection suspended on an empty queue; none suspends
        // again (MHD must not be stopped with suspended connections).
        for stream in streams { stream.finish() }
        // Resumed connections are picked up by their MHD thread shortly;
        // wait (bounded) until each was handled or has ended. Streams whose
        // client does not read are cut off by MHD_stop_daemon (which ends
        // them through the response's free callback).
        let deadline = SocketOptions.nowMs() + 1000
        while SocketOptions.nowMs() < deadline {
            if lock.withLock({ suspendedRequests.isEmpty && openStreams.isEmpty }) { break }
            usleep(5_000)
        }
        MHD_stop_daemon(d)
        let pending = connLock.withLock { () -> [ConnectionSlot] in
            let p = Array(pendingSlots.values)
            pendingSlots.removeAll()
            return p
        }
        for slot in pending { slot.release() }
    }

    /// Remembers a request about to be suspended; false once stopping.
    private func track(_ req: MHDRequest) -> Bool {
        lock.withLock {
            if stopping { return false }
            suspendedRequests[ObjectIdentifier(req)] = req
            return true
        }
    }

    func untrack(_ req: MHDRequest) {
        lock.withLock { suspendedRequests[ObjectIdentifier(req)] = nil }
    }

    // MARK: access handler

    private func access(_ connection: OpaquePointer, _ method: UnsafePointer<CChar>?,
                        _ uploadData: UnsafePointer<CChar>?, _ uploadDataSize: UnsafeMutablePointer<Int>,
                        _ conCls: UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> MHD_Result {
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
            req.lock.withLock { req.connection = connection }
            collectHeaders(connection, into: req)
            // MHD's memory pool bounds the header block roughly (431 past
            // it); this makes the configured limit exact.
            let headerBytes = req.headers.reduce(req.rawURI.utf8.count + 16) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
            if headerBytes > context.configuration.maxHeaderBytes {
                req.phase = .done
                requestReceived(connection)
                return queue(connection, .text(431, "request headers exceed the limit of \(context.configuration.maxHeaderBytes) bytes"),
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
                    kv_mhd_quickack(connection)   // more of the body to come
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
            req.lock.lock()
            let response = req.response
            req.lock.unlock()
            guard let response else {
                // Only a resume brings us here and resume follows deliver(),
                // so this is defensive: wait again.
                return suspendAgain(connection, req)
            }
            untrack(req)
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
            conn?.byteCountKnown = false
            req.wireBytes = 0
            kv_mhd_quickack(connection)
            return
        }
        req.wireBytes = header + length
        if length == 0 { return }   // complete: nothing for the client to hold back
        var received: UInt64 = 0
        if conn.byteCountKnown, kv_mhd_bytes_received(connection, &received) == 0,
           received >= conn.consumedBytes &+ header &+ length {
            return
        }
        kv_mhd_quickack(connection)
    }

    private func dispatch(_ connection: OpaquePointer, _ req: MHDRequest, method: String) -> MHD_Result {
        let (path, query) = splitPathAndQuery(req.rawURI)
        let request = HTTPRequest(method: method, path: path, query: query, headers: req.headers,
                                  body: req.body, version: .http1_1,
                                  remoteAddress: mhdConnection(connection)?.remoteAddress ?? "")
        req.body = []
        req.phase = .waiting
        context.handler.handle(request) { [self] response in req.deliver(response, front: self) }

        req.lock.lock()
        if let response = req.response {
            // Answered inline (or already from another thread): no suspend.
            req.lock.unlock()
            req.phase = .done
            return queue(connection, response, close: false)
        }
        guard track(req) else {
            // stop() already collected the waiting requests; do not suspend.
            req.lock.unlock()
            req.phase = .done
            return queue(connection, .text(503, "server shutting down"), close: true)
        }
        req.suspended = true
        MHD_suspend_connection(connection)
        req.lock.unlock()
        return .YES
    }

    private func suspendAgain(_ connection: OpaquePointer, _ req: MHDRequest) -> MHD_Result {
        req.lock.lock()
        defer { req.lock.unlock() }
        if let response = req.response {
            req.phase = .done
            return queue(connection, response, close: false)
        }
        guard track(req) else {
            req.phase = .done
            return queue(connection, .text(503, "server shutting down"), close: true)
        }
        req.suspended = true
        MHD_suspend_connection(connection)
        return .YES
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
            return MHD_create_response_from_buffer(raw.count, UnsafeMutableRawPointer(mutating: base),
                                                   .RESPMEM_MUST_COPY)
        }
        guard let mhdResponse else { return .NO }
        defer { MHD_destroy_response(mhdResponse) }
        for (name, value) in response.headers {
            switch name.lowercased() {
            case "content-length", "transfer-encoding": continue   // MHD sets these
            default: _ = MHD_add_response_header(mhdResponse, name, value)
            }
        }
        if close { _ = MHD_add_response_header(mhdResponse, "Connection", "close") }
        return MHD_queue_response(connection, UInt32(response.status), mhdResponse)
    }

    /// A chunked response fed by an HTTPResponseStream. MHD's reader runs on
    /// this connection's MHD thread and suspends the connection when the
    /// queue is empty; write/finish resume it. No thread waits per stream.
    private func queueStream(_ connection: OpaquePointer, _ response: HTTPResponse,
                             start: @Sendable (HTTPResponseStream) -> Void) -> MHD_Result {
        let stream = HTTPResponseStream(transport: .mhd(connection))
        let key = ObjectIdentifier(stream)
        let tracked = lock.withLock {
            if stopping { return false }
            openStreams[key] = stream
            return true
        }
        if tracked {
            stream.onClose { [weak self] in self?.lock.withLock { _ = self?.openStreams.removeValue(forKey: key) } }
        } else {
            stream.finish()   // stopping: send the headers and end at once
        }
        // The response holds one reference, released by the free callback
        // (when MHD is done with the response: completed, failed or closed).
        let cls = Unmanaged.passRetained(stream).toOpaque()
        let mhdResponse = kv_mhd_create_stream_response(16 * 1024, { cls, _, buf, max in
            guard let cls, let buf else { return -2 }
            let stream = Unmanaged<HTTPResponseStream>.fromOpaque(cls).takeUnretainedValue()
            return stream.readMHD(into: UnsafeMutableRawPointer(buf), max: max)
        }, cls, { cls in
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
            case "content-length", "transfer-encoding", "connection": continue   // MHD sets these
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
        _ = MHD_get_connection_values(connection, .HEADER_KIND, { cls, _, key, value in
            guard let cls, let key else { return .YES }
            let req = Unmanaged<MHDRequest>.fromOpaque(cls).takeUnretainedValue()
            req.headers.append((name: String(cString: key).lowercased(),
                                value: value.map { String(cString: $0) } ?? ""))
            return .YES
        }, Unmanaged.passUnretained(req).toOpaque())
    }
}

func cString(_ buf: [CChar]) -> String {
    buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

private extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
