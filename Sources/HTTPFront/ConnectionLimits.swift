import CLinux
import CMicroHTTPD
import Glibc

/// A client address without the port (IPv4 as IPv4-mapped IPv6), the key of
/// the per-IP connection count.
struct ClientIP: Hashable {
    var hi: UInt64
    var lo: UInt64

    init(_ storage: sockaddr_storage) {
        var storage = storage
        var bytes = [UInt8](repeating: 0, count: 16)
        withUnsafePointer(to: &storage) { ptr in
            switch Int32(ptr.pointee.ss_family) {
            case AF_INET:
                ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr.s_addr   // network order
                    bytes[10] = 0xff; bytes[11] = 0xff
                    withUnsafeBytes(of: &a) { for i in 0..<4 { bytes[12 + i] = $0[i] } }
                }
            case AF_INET6:
                ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var a = sin6.pointee.sin6_addr
                    withUnsafeBytes(of: &a) { for i in 0..<16 { bytes[i] = $0[i] } }
                }
            default:
                break   // AF_UNIX etc.: all share one key
            }
        }
        hi = bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        lo = bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// Counts open client connections, in total and per client IP. The accept
/// thread asks for a slot (O(1), one short lock); whoever finally closes the
/// connection's socket releases it (exactly once: `ConnectionSlot.release`
/// is idempotent, and a slot dropped without release releases itself).
final class ConnectionLimiter: @unchecked Sendable {
    let maxTotal: Int
    let maxPerIP: Int
    private let lock = NSLockLite()
    private var total = 0
    private var perIP: [ClientIP: Int] = [:]
    /// Connections refused since start (tests and logs).
    private(set) var refusedTotal = 0
    private(set) var refusedPerIP = 0

    init(maxTotal: Int, maxPerIP: Int) {
        self.maxTotal = max(1, maxTotal)
        self.maxPerIP = max(1, maxPerIP)
    }

    enum Refusal { case total, perIP }

    /// A slot for a new connection from `address`, or why there is none.
    func acquire(_ address: sockaddr_storage) -> Result<ConnectionSlot, RefusalError> {
        let ip = ClientIP(address)
        lock.lock()
        defer { lock.unlock() }
        if total >= maxTotal {
            refusedTotal += 1
            return .failure(RefusalError(reason: .total))
        }
        let n = perIP[ip, default: 0]
        if n >= maxPerIP {
            refusedPerIP += 1
            return .failure(RefusalError(reason: .perIP))
        }
        total += 1
        perIP[ip] = n + 1
        return .success(ConnectionSlot(limiter: self, ip: ip))
    }

    fileprivate func release(_ ip: ClientIP) {
        lock.lock()
        total -= 1
        if let n = perIP[ip] {
            if n <= 1 { perIP[ip] = nil } else { perIP[ip] = n - 1 }
        }
        lock.unlock()
    }

    var openConnections: Int { lock.withLock { total } }
    func openConnections(from address: sockaddr_storage) -> Int {
        let ip = ClientIP(address)
        return lock.withLock { perIP[ip, default: 0] }
    }
    var refused: (total: Int, perIP: Int) { lock.withLock { (refusedTotal, refusedPerIP) } }

    struct RefusalError: Error { let reason: Refusal }

    /// Over a limit: a best-effort, never-blocking 503 (plaintext ports only;
    /// a TLS client could not read it), then close. The request the client
    /// may already have sent is not read, so the kernel may answer with a
    /// reset instead; either way the connection is gone at once.
    static let overloadResponse: [UInt8] = Array(("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
        + "Content-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\n"
        + "too many connections\r\n\r\n").utf8)

    static func refuse(fd: Int32, writeResponse: Bool) {
        if writeResponse {
            _ = overloadResponse.withUnsafeBytes {
                send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            // FIN after the 503 rather than a bare reset when nothing is unread.
            _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        }
        SocketOptions.close(fd)
    }
}

/// One counted connection. Released by whoever closes the socket.
final class ConnectionSlot: @unchecked Sendable {
    private weak var limiter: ConnectionLimiter?
    private let ip: ClientIP
    private var released = false
    private let lock = NSLockLite()
    /// Monotonic ms when the socket was accepted (start of the first request's timeout).
    let acceptedMs = SocketOptions.nowMs()

    fileprivate init(limiter: ConnectionLimiter, ip: ClientIP) {
        self.limiter = limiter
        self.ip = ip
    }

    func release() {
        let first = lock.withLock { () -> Bool in
            if released { return false }
            released = true
            return true
        }
        if first { limiter?.release(ip) }
    }

    deinit { release() }
}
