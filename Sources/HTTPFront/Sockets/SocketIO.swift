import CLinux
import Glibc

/// A byte stream over a socket, plain or TLS. Return values of recv/send:
/// > 0 bytes, 0 = end of stream (recv only), `again` = would block, `failed`.
struct SocketIO {
    static let again = -1
    static let failed = -2

    let fd: Int32
    let tls: TLSSession?

    func recv(_ buf: UnsafeMutableRawPointer, _ count: Int) -> Int {
        if let tls { return tls.recv(buf, count) }
        while true {
            let n = Glibc.recv(fd, buf, count, 0)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            return e == EAGAIN || e == EWOULDBLOCK ? SocketIO.again : SocketIO.failed
        }
    }

    func send(_ buf: UnsafeRawPointer, _ count: Int) -> Int {
        if let tls { return tls.send(buf, count) }
        return SocketIO.rawSend(fd, buf, count)
    }

    static func rawSend(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int) -> Int {
        while true {
            let n = Glibc.send(fd, buf, count, KV_MSG_NOSIGNAL)
            if n > 0 { return n }
            let e = errno
            if n < 0 && e == EINTR { continue }
            return n < 0 && (e == EAGAIN || e == EWOULDBLOCK) ? SocketIO.again : SocketIO.failed
        }
    }

    /// close_notify (TLS), then close the socket.
    func close() {
        tls?.bye()
        SocketOptions.close(fd)
    }
}
