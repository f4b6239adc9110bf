import Synchronization

/// One libmicrohttpd connection as the front sees it: its connection slot
/// (released when MHD closes the socket) and the request deadline the reaper
/// enforces.
final class MHDConnection: Sendable {
    struct Timing {
        /// 0 = no deadline (request complete, handler or response running).
        var deadlineMs: UInt64
        /// When the request now being received began; 0 = none in progress.
        var receivingSinceMs: UInt64
        var expired = false
        /// Bytes of the requests completed on this connection (header blocks
        /// and Content-Length bodies), to tell from TCP_INFO whether the
        /// current body has arrived; false after a body of unknown wire size
        /// (chunked). Used only on the connection's MHD thread.
        var consumedBytes: UInt64 = 0
        var byteCountKnown = true
    }

    let fd: Int32
    let slot: ConnectionSlot?
    /// The client's "ip:port", formatted once per connection.
    let remoteAddress: String
    let timing: Mutex<Timing>

    init(fd: Int32, slot: ConnectionSlot?, deadlineMs: UInt64, receivingSinceMs: UInt64, remoteAddress: String) {
        self.remoteAddress = remoteAddress
        self.fd = fd
        self.slot = slot
        timing = Mutex(Timing(deadlineMs: deadlineMs, receivingSinceMs: receivingSinceMs))
    }
}
