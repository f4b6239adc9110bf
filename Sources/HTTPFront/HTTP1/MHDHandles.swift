import CMicroHTTPD

/// A libmicrohttpd connection, so code outside HTTP1/ (the response stream)
/// can suspend and resume it without importing libmicrohttpd.
/// @unchecked Sendable: a plain C handle. libmicrohttpd allows
/// MHD_resume_connection from any thread; `suspend` and `peerClosed` are only
/// called on the connection's own MHD thread (access handler, content reader).
/// Callers keep it no longer than MHD keeps the connection (until the
/// request's completed or the response's free callback).
struct MHDConnectionHandle: @unchecked Sendable {
    let raw: OpaquePointer

    /// MHD_ContentReaderCallback results that end a response.
    static let readerEndOfStream = -1
    static let readerEndWithError = -2

    func suspend() { MHD_suspend_connection(raw) }
    func resume() { MHD_resume_connection(raw) }

    /// The client has closed (or reset) the socket: FIN, HUP or error pending.
    var peerClosed: Bool { kv_mhd_peer_closed(raw) != 0 }
}

/// The running libmicrohttpd daemon.
/// @unchecked Sendable: a plain C handle; libmicrohttpd's MHD_add_connection
/// is thread-safe, and MicroHTTPDFront stops the daemon only after taking the
/// handle out of its state (no hand-over can start afterwards).
struct MHDDaemonHandle: @unchecked Sendable {
    let raw: OpaquePointer
}
