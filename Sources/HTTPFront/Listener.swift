import CLinux
import Threading
import CMicroHTTPD   // epoll constants, accept4 wrapper
import Glibc
import Logging

/// The listening socket and its accept thread. Accepted sockets are made
/// non-blocking and TCP_NODELAY, then handed to `onAccept` (which assigns an
/// event loop); the thread itself never waits on a client.
final class Listener: @unchecked Sendable {
    private let fd: Int32
    private let stopFd: Int32
    private var thread: JoinableThread?
    let boundPort: Int

    init(host: String, port: Int, backlog: Int32 = 1024) throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let ai = res else {
            throw HTTPServerError.system("getaddrinfo(\(host))", rc == EAI_SYSTEM ? errno : EINVAL)
        }
        defer { freeaddrinfo(res) }

        let s = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if s < 0 { throw HTTPServerError.system("socket", errno) }
        SocketOptions.setReuseAddr(s)
        if bind(s, ai.pointee.ai_addr, ai.pointee.ai_addrlen) != 0 {
            let e = errno; SocketOptions.close(s)
            throw HTTPServerError.system("bind(\(host):\(port))", e)
        }
        if listen(s, backlog) != 0 {
            let e = errno; SocketOptions.close(s)
            throw HTTPServerError.system("listen", e)
        }
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) }
        }
        var p = 0
        withUnsafePointer(to: &ss) { ptr in
            if Int32(ptr.pointee.ss_family) == AF_INET6 {
                ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p = Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            } else {
                ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p = Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        }
        boundPort = p
        fd = s
        stopFd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        if stopFd < 0 {
            let e = errno; SocketOptions.close(s)
            throw HTTPServerError.system("eventfd", e)
        }
    }

    func start(onAccept: @escaping @Sendable (Int32, sockaddr_storage, socklen_t) -> Void) throws {
        let fd = self.fd, stopFd = self.stopFd
        thread = try JoinableThread(name: "http-accept") {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: stopFd, events: Int16(POLLIN), revents: 0)]
            var backoffMs: Int32 = -1
            while true {
                fds[0].revents = 0; fds[1].revents = 0
                if backoffMs > 0 {
                    // Out of descriptors: the listen socket stays readable, so
                    // wait on the stop eventfd alone for a while (no spinning;
                    // pending clients wait in the backlog meanwhile).
                    let r = poll(&fds[1], 1, backoffMs)
                    if r < 0 && errno != EINTR { break }
                    if fds[1].revents != 0 { break }
                    backoffMs = -1
                    continue
                }
                let r = poll(&fds, 2, -1)
                if r < 0 && errno != EINTR { break }
                if fds[1].revents != 0 { break }
                // Drain the accept queue.
                while true {
                    var ss = sockaddr_storage()
                    var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                    let c = withUnsafeMutablePointer(to: &ss) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            kv_accept_nonblocking(fd, $0, &len)
                        }
                    }
                    if c >= 0 {
                        SocketOptions.setNoDelay(c)
                        onAccept(c, ss, len)
                        continue
                    }
                    let e = errno
                    if e == EINTR || e == ECONNABORTED { continue }
                    if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                        // Out of descriptors: back off instead of spinning on a
                        // readable listen socket.
                        backoffMs = 50
                    }
                    break
                }
            }
        }
    }

    /// Stops accepting and closes the listen socket. Idempotent via HTTPServer.
    func stop() {
        var one: UInt64 = 1
        _ = write(stopFd, &one, 8)
        thread?.join()
        thread = nil
        SocketOptions.close(fd)
        SocketOptions.close(stopFd)
    }
}

/// The connection preface every prior-knowledge HTTP/2 client sends first.
let http2Preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

/// A freshly accepted socket whose protocol is not known yet. It peeks (never
/// consumes) until the bytes either diverge from the HTTP/2 preface (→ hand
/// the socket to libmicrohttpd) or match all 24 bytes (→ HTTP/2 here).
final class Sniffer: LoopConnection {
    let fd: Int32
    var token: UInt64 = 0
    let loop: EventLoop
    let context: FrontContext
    let address: sockaddr_storage
    let addressLength: socklen_t
    let slot: ConnectionSlot
    private let deadlineMs: UInt64
    private var done = false

    init(fd: Int32, loop: EventLoop, context: FrontContext, address: sockaddr_storage, addressLength: socklen_t,
         slot: ConnectionSlot) {
        self.slot = slot
        self.fd = fd
        self.loop = loop
        self.context = context
        self.address = address
        self.addressLength = addressLength
        deadlineMs = SocketOptions.nowMs() + UInt64(max(1, context.configuration.sniffTimeoutMs))
    }

    func handleEvents(_ events: UInt32) {
        guard !done else { return }
        var buf = [UInt8](repeating: 0, count: http2Preface.count)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_PEEK)) }
        if n < 0 {
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR {
                if events & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { close() }
                return
            }
            close()
            return
        }
        if n == 0 { close(); return }   // connected and closed without a byte
        if buf[0..<n] != http2Preface[0..<n] {
            handToMicroHTTPD()
        } else if n == http2Preface.count {
            becomeHTTP2()
        } else if events & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue) != 0 {
            close()   // partial preface and the peer stopped sending
        }
        // else: a prefix of the preface; the next edge brings the rest.
    }

    func tick(nowMs: UInt64) {
        if !done && nowMs >= deadlineMs {
            context.logger.trace("closing connection that sent nothing recognisable within the sniff timeout")
            close()
        }
    }

    func shutdown() { close() }

    private func close() {
        guard !done else { return }
        done = true
        loop.deregister(token: token, fd: fd)
        SocketOptions.close(fd)
        slot.release()
    }

    private func handToMicroHTTPD() {
        done = true
        loop.deregister(token: token, fd: fd)
        // MHD owns reads from now on; ACK its first segments promptly.
        SocketOptions.setQuickAck(fd)
        context.microHTTPD.addConnection(fd: fd, address: address, length: addressLength, slot: slot)
    }

    private func becomeHTTP2() {
        done = true
        let conn = HTTP2Connection(fd: fd, token: token, loop: loop, context: context,
                                   remoteAddress: SocketOptions.describe(address), slot: slot)
        loop.replace(token: token, with: conn)
        guard conn.start() else {
            conn.close()
            return
        }
        // Edge-triggered: the preface is already buffered and no new edge will
        // announce it, so read right away.
        conn.handleEvents(EPOLLIN.rawValue)
    }
}
