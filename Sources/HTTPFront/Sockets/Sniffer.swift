import Threading
import CLinux
import Glibc
import Logging

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

    init(
        fd: Int32, loop: EventLoop, context: FrontContext, address: sockaddr_storage, addressLength: socklen_t,
        slot: ConnectionSlot
    ) {
        self.slot = slot
        self.fd = fd
        self.loop = loop
        self.context = context
        self.address = address
        self.addressLength = addressLength
        deadlineMs = UInt64(MonotonicClock.nowMs()) + UInt64(max(1, context.configuration.sniffTimeoutMs))
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
        if n == 0 {
            close()
            return
        }  // connected and closed without a byte
        if buf[0..<n] != http2Preface[0..<n] {
            handToMicroHTTPD()
        } else if n == http2Preface.count {
            becomeHTTP2()
        } else if events & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue) != 0 {
            close()  // partial preface and the peer stopped sending
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
        let conn = HTTP2Connection(
            fd: fd, token: token, loop: loop, context: context,
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
