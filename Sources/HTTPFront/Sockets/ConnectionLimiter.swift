import CLinux
import Glibc
import Synchronization

/// Counts open client connections, in total and per client IP. The accept
/// thread asks for a slot (O(1), one short lock); whoever finally closes the
/// connection's socket releases it (exactly once: `ConnectionSlot.release`
/// is idempotent, and a slot dropped without release releases itself).
final class ConnectionLimiter: Sendable {
    private struct Counts {
        var total = 0
        var perIP: [ClientIP: Int] = [:]
        /// Connections refused since start (tests and logs).
        var refusedTotal = 0
        var refusedPerIP = 0
    }

    let maxTotal: Int
    let maxPerIP: Int
    private let counts = Mutex(Counts())

    init(maxTotal: Int, maxPerIP: Int) {
        self.maxTotal = max(1, maxTotal)
        self.maxPerIP = max(1, maxPerIP)
    }

    enum Refusal { case total, perIP }

    struct RefusalError: Error { let reason: Refusal }

    /// A slot for a new connection from `address`, or why there is none.
    func acquire(_ address: sockaddr_storage) -> Result<ConnectionSlot, RefusalError> {
        let ip = ClientIP(address)
        let refusal = counts.withLock { c -> Refusal? in
            if c.total >= maxTotal {
                c.refusedTotal += 1
                return .total
            }
            let n = c.perIP[ip, default: 0]
            if n >= maxPerIP {
                c.refusedPerIP += 1
                return .perIP
            }
            c.total += 1
            c.perIP[ip] = n + 1
            return nil
        }
        if let refusal { return .failure(RefusalError(reason: refusal)) }
        return .success(ConnectionSlot(limiter: self, ip: ip))
    }

    /// Called once per slot, by `ConnectionSlot.release`.
    func release(_ ip: ClientIP) {
        counts.withLock { c in
            c.total -= 1
            if let n = c.perIP[ip] {
                if n <= 1 { c.perIP[ip] = nil } else { c.perIP[ip] = n - 1 }
            }
        }
    }

    var openConnections: Int { counts.withLock { $0.total } }

    func openConnections(from address: sockaddr_storage) -> Int {
        let ip = ClientIP(address)
        return counts.withLock { $0.perIP[ip, default: 0] }
    }

    var refused: (total: Int, perIP: Int) { counts.withLock { ($0.refusedTotal, $0.refusedPerIP) } }

    /// Over a limit: a best-effort, never-blocking 503 (plaintext ports only;
    /// a TLS client could not read it), then close. The request the client
    /// may already have sent is not read, so the kernel may answer with a
    /// reset instead; either way the connection is gone at once.
    static let overloadResponse: [UInt8] = Array(
        ("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
            + "Content-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\n"
            + "too many connections\r\n\r\n").utf8)

    static func refuse(fd: Int32, writeResponse: Bool) {
        if writeResponse {
            _ = overloadResponse.withUnsafeBytes {
                send(fd, $0.baseAddress, $0.count, KV_MSG_NOSIGNAL | KV_MSG_DONTWAIT)
            }
            // FIN after the 503 rather than a bare reset when nothing is unread.
            _ = Glibc.shutdown(fd, KV_SHUT_WR)
        }
        SocketOptions.close(fd)
    }
}
