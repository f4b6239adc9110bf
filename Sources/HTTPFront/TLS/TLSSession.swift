import CGnuTLS

/// A server-side gnutls session on a non-blocking socket. gnutls reads and
/// writes the fd itself (`gnutls_transport_set_int`); would-block comes back
/// as GNUTLS_E_AGAIN. Loop thread only.
final class TLSSession {
    let session: OpaquePointer
    private let credentials: TLSCredentials  // kept alive for the session
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
            if n > 0 {
                pendingSend = 0
                return n
            }
            let rc = Int32(n)
            if rc == GNUTLS_E_INTERRUPTED { continue }
            if rc == GNUTLS_E_AGAIN {
                pendingSend = len
                return SocketIO.again
            }
            failed = true
            return SocketIO.failed
        }
    }

    /// close_notify, best effort (skipped after a fatal error).
    func bye() {
        if !failed { kv_tls_bye(session) }
    }
}
