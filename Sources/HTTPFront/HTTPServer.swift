import Glibc
import Logging

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
    public var idleTimeoutSeconds: Int
    /// SETTINGS_MAX_CONCURRENT_STREAMS per HTTP/2 connection. One Deno process
    /// multiplexes every request and every watch over one connection, so this
    /// bounds its open watches: keep it well above the 10 a typical app uses.
    public var maxConcurrentStreams: Int = 4096
    /// PEM certificate chain and private key. Both set: the port speaks TLS
    /// only (ALPN h2 → HTTP/2, http/1.1 or none → HTTP/1.1); the sniff
    /// timeout then bounds the handshake.
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?

    public var tlsEnabled: Bool { tlsCertificateFile != nil && tlsKeyFile != nil }

    public init(host: String = "127.0.0.1", port: Int = 4512, maxBodyBytes: Int = 1_048_576,
                ioThreads: Int = 2, sniffTimeoutMs: Int = 2000, idleTimeoutSeconds: Int = 120,
                tlsCertificateFile: String? = nil, tlsKeyFile: String? = nil) {
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

/// What both protocol paths need to build requests and answer them.
struct FrontContextCore: Sendable {
    let configuration: HTTPServerConfiguration
    let handler: any HTTPRequestHandler
    let logger: Logger
}

final class FrontContext: @unchecked Sendable {
    let core: FrontContextCore
    let microHTTPD: MicroHTTPDFront
    /// Set by HTTPServer.start when TLS is configured.
    var tls: TLSContext?
    var configuration: HTTPServerConfiguration { core.configuration }
    var handler: any HTTPRequestHandler { core.handler }
    var logger: Logger { core.logger }

    init(core: FrontContextCore) {
        self.core = core
        microHTTPD = MicroHTTPDFront(context: core)
    }
}

/// Connection → loop assignment; only the accept thread calls it.
private final class RoundRobin: @unchecked Sendable {
    private var n = 0
    func next() -> Int { n &+= 1; return n }
}

/// HTTP/1.1 (libmicrohttpd) and h2c prior-knowledge HTTP/2 (nghttp2) on one
/// port. The front accepts, sniffs the first bytes for the HTTP/2 preface and
/// routes the socket to the matching engine; both call the same handler.
/// With a certificate configured the port speaks TLS only and ALPN picks the
/// engine (see TLS.swift).
public final class HTTPServer: @unchecked Sendable {
    private let context: FrontContext
    private let lock = NSLockLite()
    private var listener: Listener?
    private var loops: [EventLoop] = []
    private var started = false
    private var stopped = false
    private var port = 0

    public init(configuration: HTTPServerConfiguration, handler: any HTTPRequestHandler, logger: Logger) {
        context = FrontContext(core: FrontContextCore(configuration: configuration, handler: handler, logger: logger))
    }

    public var boundPort: Int { lock.withLock { port } }

    /// Binds, listens and starts all threads; returns once connections are accepted.
    public func start() throws {
        lock.lock()
        defer { lock.unlock() }
        guard !started else { return }
        // A client vanishing mid-write must not kill the daemon.
        signal(SIGPIPE, SIG_IGN)
        Self.raiseFileLimit()

        let config = context.configuration
        do {
            if let cert = config.tlsCertificateFile, let key = config.tlsKeyFile {
                context.tls = try TLSContext(certFile: cert, keyFile: key)
            }
            try context.microHTTPD.start()
            for i in 0..<max(1, config.ioThreads) {
                let loop = try EventLoop(index: i)
                try loop.start()
                loops.append(loop)
            }
            let listener = try Listener(host: config.host, port: config.port)
            self.listener = listener
            port = listener.boundPort
            let loops = self.loops
            let context = self.context
            let counter = RoundRobin()
            try listener.start { fd, address, length in
                let loop = loops[counter.next() % loops.count]
                loop.execute {
                    if let tls = context.tls {
                        let hs = TLSHandshaker(fd: fd, loop: loop, context: context, tls: tls,
                                               address: address, addressLength: length)
                        guard let token = loop.register(fd: fd, connection: hs) else {
                            SocketOptions.close(fd)
                            return
                        }
                        hs.token = token
                        return
                    }
                    let sniffer = Sniffer(fd: fd, loop: loop, context: context, address: address, addressLength: length)
                    guard let token = loop.register(fd: fd, connection: sniffer) else {
                        SocketOptions.close(fd)
                        return
                    }
                    sniffer.token = token
                }
            }
        } catch {
            stopLocked()
            throw error
        }
        started = true
        let protocols = context.tls != nil ? "HTTPS: HTTP/1.1 + h2 via ALPN" : "HTTP/1.1 + h2c"
        context.logger.info("listening on \(config.host):\(port) (\(protocols))")
    }

    /// Loads the configured certificate and key files again; new connections
    /// use them, open ones keep theirs. On any error (unreadable, unparsable,
    /// key not matching) the old credentials stay and the error is thrown.
    public func reloadTLS() throws {
        guard let tls = lock.withLock({ context.tls }) else { throw TLSError.notConfigured }
        try tls.reload()
    }

    /// Stops accepting, closes all connections and joins all threads. Idempotent.
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        stopLocked()
    }

    private func stopLocked() {
        guard !stopped else { return }
        stopped = true
        // Order matters: no new sockets, then no more hand-overs from the
        // loops, then MHD (which must not receive sockets once stopped).
        listener?.stop()
        listener = nil
        for loop in loops { loop.stop() }
        loops.removeAll()
        context.microHTTPD.stop()
    }

    /// Many concurrent connections need more than the common soft limit of 1024 fds.
    private static func raiseFileLimit() {
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        }
    }

    deinit { stop() }
}
