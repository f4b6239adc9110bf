import Synchronization

/// Per-request state for the HTTP/1.x path. Created by MHD's URI log callback
/// (which sees the raw, undecoded URI incl. query), retained in `*con_cls`,
/// released in the request-completed callback. Touched only on the MHD
/// thread that owns the connection; the answer comes back through `delivery`.
final class MHDRequest {
    enum Phase { case new, receiving, waiting, done }

    let rawURI: String
    var phase: Phase = .new
    var headers: [(name: String, value: String)] = []
    var body: [UInt8] = []
    var tooLarge = false
    /// Content-Length (nil: none or chunked), whether the body is chunked,
    /// and this request's bytes on the wire.
    var declaredLength: Int?
    var chunked = false
    var wireBytes: UInt64 = 0
    let delivery = MHDResponseDelivery()

    init(rawURI: String) {
        self.rawURI = rawURI
    }
}

/// Hands a request's response from whichever thread answers to the MHD
/// thread of its connection, resuming the connection if it was suspended.
/// Lives as long as the request or the handler's `respond` closure, so it
/// is what `LiveCount.mhdRequests` counts.
final class MHDResponseDelivery: Sendable {
    struct State {
        var response: HTTPResponse?
        var suspended = false
        var completed = false
        var connection: MHDConnectionHandle?
    }

    let state = Mutex(State())

    init() { LiveCount.mhdRequests.add(1) }
    deinit { LiveCount.mhdRequests.add(-1) }

    /// Stores the response and wakes a suspended connection. Harmless when
    /// called twice or after the connection is gone.
    func deliver(_ r: HTTPResponse) {
        let delivered = state.withLock { s -> Bool in
            guard !s.completed, s.response == nil else { return false }
            s.response = r
            if s.suspended, let connection = s.connection {
                s.suspended = false
                // Under the lock, so it can never overtake the suspend call in
                // the access handler.
                connection.resume()
            }
            return true
        }
        // Client gone: a streaming producer still gets its (closed) stream.
        if !delivered, let start = r.stream { HTTPResponseStream.startClosed(start) }
    }

    /// MHD is done with the request (sent, failed or client gone).
    func complete() {
        state.withLock {
            $0.completed = true
            $0.connection = nil
        }
    }
}
