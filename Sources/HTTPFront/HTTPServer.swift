import Glibc
import Logging
import Synchronization

public struct HTTPServerConfiguration: Sendable {
    public var host: String
    /// 0 = ephemeral (see `HTTPServer.boundPort`).
    public var port: Int
    /// Larger request bodies get 413 without being buffered.
    public var maxBodyBytes: Int
    /// Number of HTTP/2 epoll loops and of libmicrohttpd threads.
    public var ioThreads: Int
    /// A new connection that sends nothing recognisable for this long is closed.
    public var sniffTimeoutMs: Int
    /// A keep-alive connection with no request in progress is closed after
    /// this long without traffic (HTTP/1.1: libmicrohttpd's inactivity
    /// timeout; HTTP/2: no open stream and no complete frame received).
    public var idleTimeoutSeconds: Int
    /// Open client connections at most (all protocols); more are closed at
    /// accept (plaintext: after a best-effort `503` with `Retry-After: 1`).
    /// Clamped to what RLIMIT_NOFILE allows.
    public var maxConnections: Int = 10_000
    /// Open connections per client IP at most; more are refused like above.
    public var maxConnectionsPerIP: Int = 1000
    /// A request whose headers and body are not complete this long after it
    /// began (HTTP/1.1: after accept, or after the request line of a later
    /// request on a keep-alive connection; HTTP/2: after its HEADERS began)
    /// is answered 408 and closed (HTTP/1.1) or reset (HTTP/2). Slowloris
    /// clients cannot hold a connection longer. Not applied to responses
    /// (streaming or not) once the request is complete.
    public var requestTimeoutSeconds: Int = 30
    /// Largest request header block. HTTP/1.1: the libmicrohttpd
    /// per-connection memory pool is sized from it (more → 431, a too-long
    /// request line → 414); HTTP/2: SETTINGS_MAX_HEADER_LIST_SIZE, counted
    /// as in RFC 9113 (name + value + 32 per field) → 431.
    public var maxHeaderBytes: Int = 16 * 1024
    /// HTTP/2: request bytes (header fields and bodies) buffered at once
    /// across one connection's streams not yet handed to the handler (each
    /// within `maxHeaderBytes` / `maxBodyBytes`); a stream pushing past it is
    /// reset with ENHANCE_YOUR_CALM. Bounds memory against stream floods,
    /// whatever `maxConcurrentStreams` is.
    public var maxBufferedRequestBytesPerConnection: Int = 64 << 20
    /// SETTINGS_MAX_CONCURRENT_STREAMS per HTTP/2 connection. One Deno process
    /// multiplexes every request and every watch over one connection and
    /// queues new streams at this limit, so it bounds the open watches of one
    /// client process (one per WebSocket in a chat server adds up fast).
    /// Reaching it is logged once per connection and counted
    /// (`FrontStats.http2StreamLimitReached`).
    public var maxConcurrentStreams: Int = 100_000
    /// HTTP/2 rapid reset (CVE-2023-44487): streams the client resets before
    /// they were answered cost the handler's work but no longer count against
    /// `maxConcurrentStreams`. A token bucket of this burst, refilled at this
    /// rate per second, allows them; past it the connection gets GOAWAY
    /// ENHANCE_YOUR_CALM. Resets of answered streams (a cancelled watch) are
    /// not counted: their work is done.
    public var earlyResetBurst: Int = 1000
    public var earlyResetsPerSecond: Int = 200
    /// PEM certificate chain and private key. Both set: the port speaks TLS
    /// only (ALPN h2 → HTTP/2, http/1.1 or none → HTTP/1.1); the sniff
    /// timeout then bounds the handshake.
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?

    public var tlsEnabled: Bool { tlsCertificateFile != nil && tlsKeyFile != nil }

    public init(
        host: String = "127.0.0.1", port: Int = 4512, maxBodyBytes: Int = 1_048_576,
        ioThreads: Int = 2, sniffTimeoutMs: Int = 2000, idleTimeoutSeconds: Int = 120,
        tlsCertificateFile: String? = nil, tlsKeyFile: String? = nil
    ) {
        self.tlsCertificateFile = tlsCertificateFile
        self.tlsKeyFile = tlsKeyFile
        self.host = host
        self.port = port
        self.maxBodyBytes = maxBodyBytes
        self.ioThreads = ioThreads
        self.sniffTimeoutMs = sniffTimeoutMs
        self.idleTimeoutSeconds = idleTimeoutSeconds
    }
}

/// HTTP/1.1 (libmicrohttpd) and h2c prior-knowledge HTTP/2 (nghttp2) on one
/// port. The front accepts, sniffs the first bytes for the HTTP/2 preface and
/// routes the socket to the matching engine; both call the same handler.
/// With a certificate configured the port speaks TLS only and ALPN picks the
/// engine (see TLS/TLSHandshaker.swift).
public final class HTTPServer: Sendable {
    private struct State {
        var listener: Listener?
        var loops: [EventLoop] = []
        /// Set by start when TLS is configured.
        var tls: TLSContext?
        var started = false
        var stopped = false
        var port = 0
    }

    private let context: FrontContext
    private let state = Mutex(State())

    public init(configuration: HTTPServerConfiguration, handler: any HTTPRequestHandler, logger: Logger) {
        context = FrontContext(core: FrontContextCore(configuration: configuration, handler: handler, logger: logger))
    }

    public var boundPort: Int { state.withLock { $0.port } }

    /// Binds, listens and starts all threads; returns once connections are accepted.
    public func start() throws {
        try state.withLock { s in try start(&s) }
    }

    private func start(_ s: inout State) throws {
        guard !s.started else { return }
        // A client vanishing mid-write must not kill the daemon.
        signal(SIGPIPE, SIG_IGN)
        ConnectionBudget.raiseFileLimit()

        let config = context.configuration
        do {
            if let cert = config.tlsCertificateFile, let key = config.tlsKeyFile {
                s.tls = try TLSContext(certFile: cert, keyFile: key)
            }
            try context.microHTTPD.start()
            for i in 0..<max(1, config.ioThreads) {
                let loop = try EventLoop(index: i)
                try loop.start()
                s.loops.append(loop)
            }
            let listener = try Listener(host: config.host, port: config.port)
            s.listener = listener
            s.port = listener.boundPort
            let loops = s.loops
            let context = self.context
            let tls = s.tls
            let counter = RoundRobin()
            try listener.start { fd, address, length in
                // Runs on the accept thread: a counter check, never a wait.
                let slot: ConnectionSlot
                switch context.limiter.acquire(address) {
                case let .success(acquired): slot = acquired
                case let .failure(refusal):
                    let limit = refusal.reason == .total ? "max_connections" : "max_connections_per_ip"
                    let client = SocketOptions.describe(address)
                    context.logger.debug("refusing connection from \(client): \(limit) reached")
                    ConnectionLimiter.refuse(fd: fd, writeResponse: tls == nil)
                    return
                }
                let loop = loops[counter.next() % loops.count]
                let queued = loop.execute {
                    if let tls {
                        let hs = TLSHandshaker(
                            fd: fd, loop: loop, context: context, tls: tls,
                            address: address, addressLength: length, slot: slot)
                        guard let token = loop.register(fd: fd, connection: hs) else {
                            SocketOptions.close(fd)
                            slot.release()
                            return
                        }
                        hs.token = token
                        return
                    }
                    let sniffer = Sniffer(
                        fd: fd, loop: loop, context: context, address: address,
                        addressLength: length, slot: slot)
                    guard let token = loop.register(fd: fd, connection: sniffer) else {
                        SocketOptions.close(fd)
                        slot.release()
                        return
                    }
                    sniffer.token = token
                }
                if !queued {  // loop stopping
                    SocketOptions.close(fd)
                    slot.release()
                }
            }
        } catch {
            stop(&s)
            throw error
        }
        s.started = true
        let protocols = s.tls != nil ? "HTTPS: HTTP/1.1 + h2 via ALPN" : "HTTP/1.1 + h2c"
        context.logger.info("listening on \(config.host):\(s.port) (\(protocols))")
    }

    /// Loads the configured certificate and key files again; new connections
    /// use them, open ones keep theirs. On any error (unreadable, unparsable,
    /// key not matching) the old credentials stay and the error is thrown.
    public func reloadTLS() throws {
        guard let tls = state.withLock({ $0.tls }) else { throw TLSError.notConfigured }
        try tls.reload()
    }

    /// Stops accepting, closes all connections and joins all threads. Idempotent.
    public func stop() {
        state.withLock { s in stop(&s) }
    }

    /// First step of a graceful shutdown: close the listening socket so no
    /// new connection arrives; open connections keep being served until stop().
    public func stopAccepting() {
        state.withLock { s in
            s.listener?.stop()
            s.listener = nil
        }
    }

    private func stop(_ s: inout State) {
        guard !s.stopped else { return }
        s.stopped = true
        // Order matters: no new sockets, then no more hand-overs from the
        // loops, then MHD (which must not receive sockets once stopped).
        s.listener?.stop()
        s.listener = nil
        for loop in s.loops { loop.stop() }
        s.loops.removeAll()
        context.microHTTPD.stop()
    }

    /// Live connection counts (tests).
    var limiter: ConnectionLimiter { context.limiter }

    deinit { stop() }
}
