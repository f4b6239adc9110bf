import CLinux
import Glibc
import Threading

/// The listening socket and its accept thread. Accepted sockets are made
/// non-blocking and TCP_NODELAY, then handed to `onAccept` (which assigns an
/// event loop); the thread itself never waits on a client.
final class Listener {
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

        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let s = socket(ai.pointee.ai_family, type, 0)
        if s < 0 { throw HTTPServerError.system("socket", errno) }
        SocketOptions.setReuseAddr(s)
        if bind(s, ai.pointee.ai_addr, ai.pointee.ai_addrlen) != 0 {
            let e = errno
            SocketOptions.close(s)
            throw HTTPServerError.system("bind(\(host):\(port))", e)
        }
        if listen(s, backlog) != 0 {
            let e = errno
            SocketOptions.close(s)
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
                ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    p = Int(UInt16(bigEndian: $0.pointee.sin6_port))
                }
            } else {
                ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    p = Int(UInt16(bigEndian: $0.pointee.sin_port))
                }
            }
        }
        boundPort = p
        fd = s
        stopFd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        if stopFd < 0 {
            let e = errno
            SocketOptions.close(s)
            throw HTTPServerError.system("eventfd", e)
        }
    }

    func start(onAccept: @escaping @Sendable (Int32, sockaddr_storage, socklen_t) -> Void) throws {
        let fd = self.fd, stopFd = self.stopFd
        thread = try JoinableThread(name: "http-accept") {
            var fds = [
                pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stopFd, events: Int16(POLLIN), revents: 0)
            ]
            var backoffMs: Int32 = -1
            while true {
                fds[0].revents = 0
                fds[1].revents = 0
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
