import Glibc

/// How many connections the process can hold open, from its descriptor limit.
enum ConnectionBudget {
    /// `maxConnections` clamped to the descriptors this process may open:
    /// a plain connection holds one fd, HTTP/1.1 over TLS three (socket and
    /// socketpair); 256 stay for the database, logs and the server itself.
    /// Returns the limit and whether it was clamped.
    static func maxConnections(_ c: HTTPServerConfiguration) -> (Int, Bool) {
        raiseFileLimit()
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0, rl.rlim_cur != rlim_t.max else {
            return (max(1, c.maxConnections), false)
        }
        let perConnection = c.tlsEnabled ? 3 : 1
        let budget = max(16, (Int(clamping: rl.rlim_cur) - 256) / perConnection)
        return c.maxConnections > budget ? (budget, true) : (max(1, c.maxConnections), false)
    }

    /// Many concurrent connections need more than the common soft limit of 1024 fds.
    static func raiseFileLimit() {
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        }
    }
}
