import CLinux
import CMicroHTTPD
import Glibc
import Logging
import Synchronization
import Threading

/// libmicrohttpd daemon without a listen socket: it gets HTTP/1.x sockets
/// from the sniffer via MHD_add_connection and runs its own poll() threads.
/// Request handling is in MicroHTTPDFront+Requests.swift, connection
/// tracking and request timeouts in MicroHTTPDFront+Timeouts.swift.
final class MicroHTTPDFront: Sendable {
    struct State {
        var daemon: MHDDaemonHandle?
        var stopping = false
        var suspendedRequests: [ObjectIdentifier: MHDResponseDelivery] = [:]
        /// Streaming responses not ended yet (finished by stop()).
        var openStreams: [ObjectIdentifier: HTTPResponseStream] = [:]
        var reaper: JoinableThread?
        var reaperStopFd: Int32 = -1
    }

    /// Connection tracking for limits and request timeouts. Its lock also
    /// orders the reaper's writes to a socket before MHD's close of it (MHD
    /// notifies CLOSED before it closes the fd).
    struct ConnectionTable {
        /// Slots of sockets handed to MHD_add_connection whose STARTED
        /// notification has not run yet, by fd.
        var pendingSlots: [Int32: ConnectionSlot] = [:]
        var connections: [ObjectIdentifier: MHDConnection] = [:]
        var reaperRound = 0
    }

    let context: FrontContextCore
    let state = Mutex(State())
    let table = Mutex(ConnectionTable())

    init(context: FrontContextCore) {
        self.context = context
    }

    var requestTimeoutMs: UInt64 { UInt64(max(1, context.configuration.requestTimeoutSeconds)) * 1000 }
    var idleTimeoutMs: UInt64 { UInt64(max(1, context.configuration.idleTimeoutSeconds)) * 1000 }

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
                    let wire = conCls?.pointee.map {
                        Unmanaged<MHDRequest>.fromOpaque($0).takeUnretainedValue().wireBytes
                    }
                    let front = Unmanaged<MicroHTTPDFront>.fromOpaque(cls).takeUnretainedValue()
                    front.requestFinished(connection, wireBytes: wire)
                }
                // Request finished (sent, failed or client gone): drop our context.
                // Also the only reliable end for a resumed request: MHD may
                // close a resumed connection whose client left without calling
                // the access handler again.
                guard let cls, let conCls, let raw = conCls.pointee else { return }
                conCls.pointee = nil
                let front = Unmanaged<MicroHTTPDFront>.fromOpaque(cls).takeUnretainedValue()
                let req = Unmanaged<MHDRequest>.fromOpaque(raw).takeRetainedValue()
                front.untrack(req.delivery)
                req.delivery.complete()
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
        let stopFd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        state.withLock {
            $0.daemon = MHDDaemonHandle(raw: d)
            $0.reaperStopFd = stopFd
        }
        let reaper = try JoinableThread(name: "http1-reaper") { [self] in
            var pfd = pollfd(fd: stopFd, events: Int16(POLLIN), revents: 0)
            while true {
                pfd.revents = 0
                if poll(&pfd, 1, 100) != 0 && (pfd.revents != 0 || errno != EINTR) { break }
                reapExpired(nowMs: UInt64(MonotonicClock.nowMs()))
            }
        }
        state.withLock { $0.reaper = reaper }
    }

    /// Takes ownership of `fd` (MHD closes it, also on failure) and of
    /// `slot` (released when MHD closes the connection).
    func addConnection(fd: Int32, address: sockaddr_storage, length: socklen_t, slot: ConnectionSlot) {
        let daemon = state.withLock { $0.stopping ? nil : $0.daemon }
        guard let daemon else {
            SocketOptions.close(fd)
            slot.release()
            return
        }
        // A stale entry for this fd number belonged to a socket that is
        // closed by now (the number was reused): release it.
        let stale = table.withLock { t -> ConnectionSlot? in
            let old = t.pendingSlots[fd]
            t.pendingSlots[fd] = slot
            return old
        }
        stale?.release()
        var addr = address
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { MHD_add_connection(daemon.raw, fd, $0, length) }
        }
        if rc != MHD_Result.YES {
            context.logger.warning("MHD_add_connection failed: \(String(cString: strerror(errno)))")
            // Still pending = MHD never started the connection (closed the fd).
            table.withLock { t -> ConnectionSlot? in
                guard t.pendingSlots[fd] === slot else { return nil }
                return t.pendingSlots.removeValue(forKey: fd)
            }?.release()
        }
    }

    /// Answers every request still waiting for the handler with 503 so MHD
    /// can shut down (it must not be stopped with suspended connections),
    /// then stops the daemon and its threads.
    func stop() {
        let (daemon, waiting, streams, reaper, reaperStopFd) = state.withLock { s in
            s.stopping = true
            let d = s.daemon
            s.daemon = nil
            let r = s.reaper
            s.reaper = nil
            return (d, Array(s.suspendedRequests.values), Array(s.openStreams.values), r, s.reaperStopFd)
        }
        guard let daemon else { return }
        if let reaper {
            var one: UInt64 = 1
            _ = write(reaperStopFd, &one, 8)
            reaper.join()
            SocketOptions.close(reaperStopFd)
        }
        for delivery in waiting { delivery.deliver(.text(503, "server shutting down")) }
        // Streams end with their last chunk once drained. finish() also
        // resumes a connection suspended on an empty queue; none suspends
        // again (MHD must not be stopped with suspended connections).
        for stream in streams { stream.finish() }
        // Resumed connections are picked up by their MHD thread shortly;
        // wait (bounded) until each was handled or has ended. Streams whose
        // client does not read are cut off by MHD_stop_daemon (which ends
        // them through the response's free callback).
        let deadline = UInt64(MonotonicClock.nowMs()) + 1000
        while UInt64(MonotonicClock.nowMs()) < deadline {
            if state.withLock({ $0.suspendedRequests.isEmpty && $0.openStreams.isEmpty }) { break }
            usleep(5_000)
        }
        MHD_stop_daemon(daemon.raw)
        let pending = table.withLock { t -> [ConnectionSlot] in
            let p = Array(t.pendingSlots.values)
            t.pendingSlots.removeAll()
            return p
        }
        for slot in pending { slot.release() }
    }

    /// Remembers a request about to be suspended; false once stopping.
    func track(_ delivery: MHDResponseDelivery) -> Bool {
        state.withLock {
            if $0.stopping { return false }
            $0.suspendedRequests[ObjectIdentifier(delivery)] = delivery
            return true
        }
    }

    func untrack(_ delivery: MHDResponseDelivery) {
        state.withLock { $0.suspendedRequests[ObjectIdentifier(delivery)] = nil }
    }
}
