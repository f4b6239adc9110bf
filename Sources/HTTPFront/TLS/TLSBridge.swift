import Threading
import CLinux
import Glibc

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
    private var clientEOF = false  // no more bytes from the client
    private var mhdEOF = false  // no more bytes from MHD
    private var pairWriteShut = false
    private var closed = false
    private var lastActivityMs = UInt64(MonotonicClock.nowMs())

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
                if n > 0 {
                    toMHD.consume(n)
                    progress = true
                    continue
                }
                if n == SocketIO.again { break }
                // MHD closed its side: drop what it will never read.
                toMHD.removeAll()
                clientEOF = true
                pairWriteShut = true
            }
            if clientEOF && toMHD.isEmpty && !pairWriteShut {
                pairWriteShut = true
                _ = Glibc.shutdown(pairFd, KV_SHUT_WR)
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
                mhdEOF = true  // EOF or error: MHD is done with the connection
                progress = true
            }
            // toClient → client (TLS)
            while !toClient.isEmpty {
                let n = toClient.withFront { io.send($0, $1) }
                if n > 0 {
                    toClient.consume(n)
                    progress = true
                    continue
                }
                if n == SocketIO.again { break }
                closeAll()
                return
            }
            if mhdEOF && toClient.isEmpty {
                closeAll()
                return
            }
            if progress { lastActivityMs = UInt64(MonotonicClock.nowMs()) }
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
