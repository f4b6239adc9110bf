import Threading
import CMicroHTTPD
import Glibc

// Connection tracking, limits and request timeouts of the HTTP/1.x path.
extension MicroHTTPDFront {
    func connectionStarted(
        _ connection: OpaquePointer,
        _ socketContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    ) {
        let fd = kv_mhd_connection_fd(connection)
        var buf = [CChar](repeating: 0, count: 64)
        _ = kv_mhd_client_address(connection, &buf, buf.count)
        let remoteAddress = cString(buf)
        let conn = table.withLock { t -> MHDConnection in
            let slot = t.pendingSlots.removeValue(forKey: fd)
            // The first request's clock started at accept.
            let start = slot?.acceptedMs ?? UInt64(MonotonicClock.nowMs())
            let conn = MHDConnection(
                fd: fd, slot: slot, deadlineMs: start + requestTimeoutMs,
                receivingSinceMs: start, remoteAddress: remoteAddress)
            t.connections[ObjectIdentifier(conn)] = conn
            return conn
        }
        socketContext.pointee = Unmanaged.passRetained(conn).toOpaque()
    }

    func connectionClosed(_ socketContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>) {
        guard let raw = socketContext.pointee else { return }
        socketContext.pointee = nil
        let conn = Unmanaged<MHDConnection>.fromOpaque(raw).takeRetainedValue()
        table.withLock { _ = $0.connections.removeValue(forKey: ObjectIdentifier(conn)) }
        conn.slot?.release()
    }

    func mhdConnection(_ connection: OpaquePointer) -> MHDConnection? {
        guard let raw = kv_mhd_socket_context(connection) else { return nil }
        return Unmanaged<MHDConnection>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Request line received: the request must be complete within the
    /// request timeout (never later than a deadline already running).
    func requestBegan(_ connection: OpaquePointer) {
        guard let conn = mhdConnection(connection) else { return }
        let now = UInt64(MonotonicClock.nowMs())
        let limit = now + requestTimeoutMs
        conn.timing.withLock {
            $0.deadlineMs = $0.deadlineMs == 0 ? limit : min($0.deadlineMs, limit)
            if $0.receivingSinceMs == 0 { $0.receivingSinceMs = now }
        }
    }

    /// Headers and body are in: no deadline while the handler and the
    /// response (streaming or not) run.
    func requestReceived(_ connection: OpaquePointer) {
        guard let conn = mhdConnection(connection) else { return }
        conn.timing.withLock {
            $0.deadlineMs = 0
            $0.receivingSinceMs = 0
        }
    }

    /// Response done, keep-alive: the next request may start any time in
    /// the idle period (MHD closes a silent connection after it), and must
    /// then complete within the request timeout.
    func requestFinished(_ connection: OpaquePointer, wireBytes: UInt64?) {
        guard let conn = mhdConnection(connection) else { return }
        let limit = UInt64(MonotonicClock.nowMs()) + idleTimeoutMs + requestTimeoutMs
        conn.timing.withLock {
            if let wireBytes { $0.consumedBytes &+= wireBytes } else { $0.byteCountKnown = false }
            $0.deadlineMs = limit
            $0.receivingSinceMs = 0
        }
    }

    /// Answers 408 on connections whose request is overdue and shuts their
    /// socket down; MHD sees EOF and closes the connection itself.
    func reapExpired(nowMs: UInt64) {
        let requestTimeoutSeconds = context.configuration.requestTimeoutSeconds
        table.withLock { t in
            // A client that half-closed (FIN) in the middle of a request can
            // never complete it, and libmicrohttpd 0.9.75 keeps such a
            // connection until its own timeout: close it. Only requests older
            // than 500 ms are checked (normal ones are complete by then), all
            // in one poll(). Once a second, idle keep-alive connections too: a
            // client that sent its request with FIN and left would otherwise
            // hold the connection for the whole idle timeout.
            t.reaperRound &+= 1
            let checkIdle = t.reaperRound % 10 == 0
            var candidates: [MHDConnection] = []
            for conn in t.connections.values {
                let check = conn.timing.withLock { c in
                    guard !c.expired && c.deadlineMs != 0 else { return false }
                    return c.receivingSinceMs != 0 ? nowMs &- c.receivingSinceMs >= 500 : checkIdle
                }
                if check { candidates.append(conn) }
            }
            if !candidates.isEmpty {
                let rdhup = Int16(0x2000)  // POLLRDHUP
                var pfds = candidates.map { pollfd(fd: $0.fd, events: rdhup, revents: 0) }
                if poll(&pfds, nfds_t(pfds.count), 0) > 0 {
                    let gone = rdhup | Int16(POLLHUP) | Int16(POLLERR)
                    for (i, conn) in candidates.enumerated() where pfds[i].revents & gone != 0 {
                        conn.timing.withLock { $0.expired = true }
                        _ = Glibc.shutdown(conn.fd, Int32(SHUT_RDWR))
                    }
                }
            }
            for conn in t.connections.values {
                conn.timing.withLock { c in
                    guard !c.expired && c.deadlineMs != 0 && nowMs >= c.deadlineMs else { return }
                    c.expired = true
                    MicroHTTPDFront.sendRequestTimeout(fd: conn.fd, seconds: requestTimeoutSeconds)
                }
            }
        }
    }

    /// Nothing of a response was written yet (the request is not complete),
    /// so this is the whole answer on the wire; then the socket is shut down.
    private static func sendRequestTimeout(fd: Int32, seconds: Int) {
        let body = "request not complete within \(seconds) s\n"
        let text =
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Connection: close\r\n\r\n" + body
        _ = Array(text.utf8).withUnsafeBytes {
            send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
        }
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Open MHD connections (tests).
    var connectionCount: Int { table.withLock { $0.connections.count } }
}
