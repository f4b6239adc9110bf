#ifndef KV_CGNUTLS_SHIM_H
#define KV_CGNUTLS_SHIM_H
// GnuTLS for the HTTPS front, plus small inline helpers so Swift does not
// have to deal with gnutls' flag enums and datum arrays.
#include <gnutls/gnutls.h>
#include <string.h>

/// Loads a PEM certificate chain and its private key into new credentials.
/// 0 on success, else a (negative) gnutls error code and *out = NULL.
static inline int kv_tls_load_credentials(gnutls_certificate_credentials_t *out,
                                          const char *cert_file, const char *key_file) {
    *out = NULL;
    gnutls_certificate_credentials_t c;
    int rc = gnutls_certificate_allocate_credentials(&c);
    if (rc < 0) return rc;
    rc = gnutls_certificate_set_x509_key_file2(c, cert_file, key_file, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (rc < 0) {
        gnutls_certificate_free_credentials(c);
        return rc;
    }
    *out = c;
    return 0;
}

/// A non-blocking server session on `fd` (gnutls reads/writes the socket
/// itself, MSG_NOSIGNAL), default priorities, ALPN offering h2 and http/1.1.
static inline int kv_tls_server_session(gnutls_session_t *out,
                                        gnutls_certificate_credentials_t creds, int fd) {
    *out = NULL;
    gnutls_session_t s;
    int rc = gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
    if (rc < 0) return rc;
    if ((rc = gnutls_set_default_priority(s)) < 0 ||
        (rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds)) < 0) {
        gnutls_deinit(s);
        return rc;
    }
    gnutls_datum_t protocols[2] = {
        { (unsigned char *)"h2", 2 },
        { (unsigned char *)"http/1.1", 8 },
    };
    if ((rc = gnutls_alpn_set_protocols(s, protocols, 2, GNUTLS_ALPN_SERVER_PRECEDENCE)) < 0) {
        gnutls_deinit(s);
        return rc;
    }
    // Our own deadline (the sniff timeout) bounds the handshake.
    gnutls_handshake_set_timeout(s, 0);
    gnutls_transport_set_int(s, fd);
    *out = s;
    return 0;
}

/// 1 when ALPN selected "h2"; 0 for "http/1.1" or no ALPN at all.
static inline int kv_tls_alpn_is_h2(gnutls_session_t s) {
    gnutls_datum_t p;
    if (gnutls_alpn_get_selected_protocol(s, &p) != 0) return 0;
    return p.size == 2 && memcmp(p.data, "h2", 2) == 0;
}

/// Sends close_notify without waiting for the peer's (non-blocking, best effort).
static inline void kv_tls_bye(gnutls_session_t s) {
    (void)gnutls_bye(s, GNUTLS_SHUT_WR);
}
#endif
