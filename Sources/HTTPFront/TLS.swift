import CGnuTLS
import CLinux
import CMicroHTTPD   // epoll constants
import Glibc
import Logging

/// Errors of the TLS configuration (start and reload).
public enum TLSError: Error, CustomStringConvertible {
    case notConfigured
    case unreadable(String, String)
    case load(cert: String, key: String, reason: String)

    public var description: String {
        switch self {
        case .notConfigured:
            return "TLS is not configured (no certificate and key files)"
        case let .unreadable(path, reason):
            return "cannot read \(path): \(reason)"
        case let .load(cert, key, reason):
            return "cannot load TLS certificate \(cert) with key \(key): \(reason)"
        }
    }
}

/// One loaded certificate chain + key. Sessions keep a reference: gnutls
/// requires credentials to outlive every session using them, so a reload only
/// affects new connections and the old credentials go with their last session.
final class TLSCredentials: @unchecked Sendable {
    let raw: OpaquePointer

    init(certFile: String, keyFile: String) throws {
        for path in [certFile, keyFile] where access(path, R_OK) != 0 {
            throw TLSError.unreadable(path, String(cString: strerror(errno)))
        }
        var c: OpaquePointer?
        let rc = kv_tls_load_credentials(&c, certFile, keyFile)
        guard rc == 0, let c else {
            throw TLSError.load(cert: certFile, key: keyFile, reason: String(cString: gnutls_strerror(rc)))
        }
        raw = c
    }

    deinit { gnutls_certificate_free_credentials(raw) }
}

/// The configured certificate/key paths and the credentials new connections get.
final class TLSContext: @unchecked Sendable {
    let certFile: String
    let keyFile: String
    private let lock = NSLockLite()
    private var current: TLSCredentials

    init(certFile: String, keyFile: String) throws {
        self.certFile = certFile
        self.keyFile = keyFile
        current = try TLSCredentials(certFile: certFile, keyFile: keyFile)
    }

    var credentials: TLSCredentials { lock.withLock { current } }

    /// Loads the files again; on failure the old credentials stay.
    func reload() throws {
        let fresh = try TLSCredentials(certFile: certFile, keyFile: keyFile)
        lock.withLock { current = fresh }
    }
}

/// A server-side gnutls session on a non-blocking socket. gnutls reads and
/// writes the fd itself (`gnutls_transport_set_int`); would-block comes back
/// as GNUTLS_E_AGAIN. Loop thread only.
final class TLSSession {
    let session: OpaquePointer
    private let credentials: TLSCredentials   // kept alive for the session
    /// Bytes of a record_send that returned AGAIN: gnutls holds the encrypted
    /// record and must be called again with the same length.
    private var pendingSend = 0
    private(set) var failed = false

    init?(fd: Int32, credentials: TLSCredentials) {
        var s: OpaquePointer?
        guard kv_tls_server_session(&s, credentials.raw, fd) == 0, let s else { return nil }
        session = s
        self.credentials = credentials
        LiveCount.tlsSessions.add(1)
    }

    deinit {
        gnutls_deinit(session)
        LiveCount.tlsSessions.add(-1)
    }

    enum HandshakeResult { case done, again, failed(String) }

    func handshake() -> HandshakeResult {
        for _ in 0..<16 {
            let rc = gnutls_handshake(session)
            if rc == GNUTLS_E_SUCCESS { return .done }
            if rc == GNUTLS_E_AGAIN { return .again }
            if rc == GNUTLS_E_INTERRUPTED || gnutls_error_is_fatal(rc) == 0 { continue }
            failed = true
            return .failed(String(cString: gnutls_strerror(rc)))
        }
        return .again
    }

    var negotiatedH2: Bool { kv_tls_alpn_is_h2(session) == 1 }

    /// > 0 bytes, 0 = end of stream (close_notify or TCP FIN), SocketIO.again, SocketIO.failed.
    func recv(_ buf: UnsafeMutableRawPointer, _ count: Int) -> Int {
        while true {
            let n = gnutls_record_recv(session, buf, count)
            if n >= 0 { return n }
            let rc = Int32(n)
            if rc == GNUTLS_E_AGAIN { return SocketIO.again }
            if rc == GNUTLS_E_INTERRUPTED { continue }
            // A vanished client without close_notify is just the end.
            if rc == GNUTLS_E_PREMATURE_TERMINATION { return 0 }
            // Renegotiation requests, warning alerts: ignore and go on.
            if gnutls_error_is_fatal(rc) == 0 { continue }
            failed = true
            return SocketIO.failed
        }
    }

    /// > 0 bytes taken, SocketIO.again (call again with at least the same bytes), SocketIO.failed.
    func send(_ buf: UnsafeRawPointer, _ count: Int) -> Int {
        let len = pendingSend > 0 ? pendingSend : min(count, 16 * 1024)
        while true {
            let n = gnutls_record_send(session, buf, len)
            if n > 0 { pendingSend = 0; return n }
            let rc = Int32(n)
            if rc == GNUTLS_E_INTERRUPTED { continue }
            if rc == GNUTLS_E_AGAIN { pendingSend = len; return SocketIO.again }
            failed = true
            return SocketIO.failed
        }
    }

    /// close_notify, best effort (skipped after a fatal error).
    func bye() {
        if !failed { kv_tls_bye(session) }
    }
}

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
            let n = Glibc.send(fd, buf, count, Int32(MSG_NOSIGNAL))
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

    init(fd: Int32, loop: EventLoop, context: FrontContext, tls: TLSContext,
         address: sockaddr_storage, addressLength: socklen_t, slot: ConnectionSlot) {
        self.slot = slot
        self.fd = fd
        self.loop = loop
        self.context = context
        self.address = address
        self.addressLength = addressLength
        session = TLSSession(fd: fd, credentials: tls.credentials)
        deadlineMs = SocketOptions.nowMs() + UInt64(max(1, context.configuration.sniffTimeoutMs))
    }

    func handleEvents(_ events: UInt32) {
        guard !done else { return }
        guard let session else { close(); return }
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
        let conn = HTTP2Connection(fd: fd, token: token, loop: loop, context: context,
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
        let bridge = TLSBridge(io: SocketIO(fd: fd, tls: session), clientToken: token,
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

/// HTTP/1.1 over TLS: libmicrohttpd speaks plain HTTP on one end of a
/// socketpair, this object pumps bytes between the other end and the TLS
/// session, on the event loop (no thread per connection).
///
///   client ⇄ TLS socket ⇄ [decrypt → toMHD] → pair ⇄ MHD
///                        ← [toClient → encrypt] ← pair
///
/// Each direction buffers at most ~`cap` bytes: a full buffer stops reading
/// its source until the sink drains it (the sink's EPOLLOUT edge re-runs the
/// pump, which then reads again; gnutls' own decrypted buffer is read there
/// too). EOF from the client half-closes the pair (SHUT_WR) once delivered;
/// EOF from MHD sends close_notify and closes everything once delivered.
final class TLSBridge {
    /// The two registrations on the loop (one per fd), forwarding to the bridge.
    final class Side: LoopConnection {
        weak var bridge: TLSBridge?
        let isClient: Bool
        init(isClient: Bool) { self.isClient = isClient }
        func handleEvents(_ events: UInt32) { bridge?.pump() }
        func tick(nowMs: UInt64) { if isClient { bridge?.tick(nowMs: nowMs) } }
        func shutdown() { bridge?.closeAll() }
    }

    static let cap = 64 * 1024

    let io: SocketIO
    let clientToken: UInt64
    var pairToken: UInt64?
    let pairFd: Int32
    let loop: EventLoop
    let context: FrontContext
    // Strong: the loop holds the sides, the sides hold the bridge (weakly);
    // the bridge lives as long as its sides are registered.
    private(set) var clientSide = Side(isClient: true)
    private(set) var pairSide = Side(isClient: false)
    private var strongSelf: TLSBridge?

    private var toMHD = ByteQueue()
    private var toClient = ByteQueue()
    private var clientEOF = false     // no more bytes from the client
    private var mhdEOF = false        // no more bytes from MHD
    private var pairWriteShut = false
    private var closed = false
    private var lastActivityMs = SocketOptions.nowMs()

    init(io: SocketIO, clientToken: UInt64, pairFd: Int32, loop: EventLoop, context: FrontContext) {
        self.io = io
        self.clientToken = clientToken
        self.pairFd = pairFd
        self.loop = loop
        self.context = context
        clientSide.bridge = self
        pairSide.bridge = self
        strongSelf = self
        LiveCount.tlsBridges.add(1)
    }

    deinit { LiveCount.tlsBridges.add(-1) }

    func pump() {
        guard !closed else { return }
        let buf = loop.readBuffer
        var gotData = false
        var progress = true
        while progress && !closed {
            progress = false
            // client (TLS) → toMHD
            while !clientEOF && toMHD.count < TLSBridge.cap {
                let n = io.recv(buf.baseAddress!, buf.count)
                if n > 0 {
                    toMHD.append(UnsafeRawBufferPointer(start: buf.baseAddress, count: n))
                    progress = true
                    gotData = true
                } else if n == 0 {
                    clientEOF = true
                    progress = true
                } else if n == SocketIO.again {
                    break
                } else {
                    closeAll()
                    return
                }
            }
            // toMHD → pair
            while !toMHD.isEmpty && !pairWriteShut {
                let n = toMHD.withFront { SocketIO.rawSend(pairFd, $0, $1) }
                if n > 0 { toMHD.consume(n); progress = true; continue }
                if n == SocketIO.again { break }
                // MHD closed its side: drop what it will never read.
                toMHD.removeAll()
                clientEOF = true
                pairWriteShut = true
            }
            if clientEOF && toMHD.isEmpty && !pairWriteShut {
                pairWriteShut = true
                _ = Glibc.shutdown(pairFd, Int32(SHUT_WR))
            }
            // pair → toClient
            while !mhdEOF && toClient.count < TLSBridge.cap {
                let n = Glibc.recv(pairFd, buf.baseAddress, buf.count, 0)
                if n > 0 {
                    toClient.append(UnsafeRawBufferPointer(start: buf.baseAddress, count: n))
                    progress = true
                    continue
                }
                let e = errno
                if n < 0 && e == EINTR { continue }
                if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) { break }
                mhdEOF = true   // EOF or error: MHD is done with the connection
                progress = true
            }
            // toClient → client (TLS)
            while !toClient.isEmpty {
                let n = toClient.withFront { io.send($0, $1) }
                if n > 0 { toClient.consume(n); progress = true; continue }
                if n == SocketIO.again { break }
                closeAll()
                return
            }
            if mhdEOF && toClient.isEmpty {
                closeAll()
                return
            }
            if progress { lastActivityMs = SocketOptions.nowMs() }
        }
        if gotData { SocketOptions.setQuickAck(io.fd) }
    }

    /// A half-closed bridge that stopped moving (MHD gone but the client does
    /// not read, or the client gone and MHD never closes) is cut off after
    /// the idle timeout. MHD applies its own timeout to open connections.
    func tick(nowMs: UInt64) {
        guard !closed, clientEOF || mhdEOF else { return }
        let idleMs = UInt64(max(1, context.configuration.idleTimeoutSeconds)) * 1000
        if nowMs &- lastActivityMs > idleMs { closeAll() }
    }

    /// Closes both fds exactly once (MHD then sees EOF/EPIPE on its end).
    func closeAll() {
        guard !closed else { return }
        closed = true
        loop.deregister(token: clientToken, fd: io.fd)
        io.close()
        if let pairToken { loop.deregister(token: pairToken, fd: pairFd) }
        SocketOptions.close(pairFd)
        toMHD.removeAll()
        toClient.removeAll()
        strongSelf = nil
    }
}

/// A FIFO of bytes with a read offset (compacted when half consumed).
struct ByteQueue {
    private var bytes: [UInt8] = []
    private var offset = 0

    var count: Int { bytes.count - offset }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ data: UnsafeRawBufferPointer) {
        if offset > 0 && offset >= bytes.count / 2 {
            bytes.removeFirst(offset)
            offset = 0
        }
        bytes.append(contentsOf: data)
    }

    mutating func consume(_ n: Int) {
        offset += n
        if offset >= bytes.count { bytes.removeAll(keepingCapacity: true); offset = 0 }
    }

    mutating func removeAll() { bytes = []; offset = 0 }

    func withFront<R>(_ body: (UnsafeRawPointer, Int) -> R) -> R {
        bytes.withUnsafeBytes { body($0.baseAddress! + offset, count) }
    }
}
