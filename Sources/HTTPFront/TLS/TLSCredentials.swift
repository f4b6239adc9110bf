import CGnuTLS
import Glibc

/// One loaded certificate chain + key. Sessions keep a reference: gnutls
/// requires credentials to outlive every session using them, so a reload only
/// affects new connections and the old credentials go with their last session.
/// @unchecked Sendable: `raw` is set once in init and never changed; gnutls
/// credentials are read-only after loading and may be shared by sessions on
/// any thread.
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
