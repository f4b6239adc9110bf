import Threading
import CLinux
import Glibc
import Logging

/// A freshly accepted socket on a TLS port: drives the non-blocking handshake
/// (bounded by the sniff timeout), then hands the session to HTTP/2 (ALPN h2)
/// or to libmicrohttpd through a socket pair (http/1.1 or no ALPN).
final class TLSHandshaker: LoopConnection {
    let fd: Int32
    var token: UInt64 = 0
    let loop: EventLoop
    let context: FrontContext
    let address: sockaddr_storage
    let addressLength: socklen_t
    private let session: TLSSession?
    let slot: ConnectionSlot
    private let deadlineMs: UInt64
    private var done = false

    init(
        fd: Int32, loop: EventLoop, context: FrontContext, tls: TLSContext,
        address: sockaddr_storage, addressLength: socklen_t, slot: ConnectionSlot
    ) {
        self.slot = slot
        self.fd = fd
        self.loop = loop
        self.context = context
        self.address = address
        self.addressLength = addressLength
        session = TLSSession(fd: fd, credentials: tls.credentials)
        deadlineMs = UInt64(MonotonicClock.nowMs()) + UInt64(max(1, context.configuration.sniffTimeoutMs))
    }

    func handleEvents(_ events: UInt32) {
        guard !done else { return }
        guard let session else {
            close()
            return
        }
        switch session.handshake() {
        case .again:
            if events & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { close() }
        case let .failed(reason):
            context.logger.debug("TLS handshake with \(SocketOptions.describe(address)) failed: \(reason)")
            close()
        case .done:
            done = true
            SocketOptions.setQuickAck(fd)
            if session.negotiatedH2 { becomeHTTP2(session) } else { becomeHTTP1(session) }
        }
    }

    func tick(nowMs: UInt64) {
        if !done && nowMs >= deadlineMs {
            context.logger.trace("closing connection that did not complete the TLS handshake in time")
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

    private func becomeHTTP2(_ session: TLSSession) {
        let conn = HTTP2Connection(
            fd: fd, token: token, loop: loop, context: context,
            remoteAddress: SocketOptions.describe(address), tls: session, slot: slot)
        loop.replace(token: token, with: conn)
        guard conn.start() else {
            conn.close()
            return
        }
        // gnutls may already hold decrypted bytes (the preface): read now.
        conn.handleEvents(EPOLLIN.rawValue)
    }

    private func becomeHTTP1(_ session: TLSSession) {
        var pair: [Int32] = [-1, -1]
        let flags = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, flags, 0, &pair) == 0 else {
            context.logger.warning("socketpair failed: \(String(cString: strerror(errno)))")
            loop.deregister(token: token, fd: fd)
            SocketIO(fd: fd, tls: session).close()
            slot.release()
            return
        }
        let bridge = TLSBridge(
            io: SocketIO(fd: fd, tls: session), clientToken: token,
            pairFd: pair[0], loop: loop, context: context)
        loop.replace(token: token, with: bridge.clientSide)
        guard let pairToken = loop.register(fd: pair[0], connection: bridge.pairSide) else {
            bridge.pairToken = nil
            bridge.closeAll()
            SocketOptions.close(pair[1])
            slot.release()
            return
        }
        bridge.pairToken = pairToken
        // MHD owns the other end; it sees the TLS client's address.
        // The slot goes with MHD's end: released when MHD closes it.
        context.microHTTPD.addConnection(fd: pair[1], address: address, length: addressLength, slot: slot)
        bridge.pump()
    }
}
