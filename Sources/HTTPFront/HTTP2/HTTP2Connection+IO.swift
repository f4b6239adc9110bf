import CNGHTTP2

// Socket I/O of an HTTP/2 connection: bytes in to nghttp2, frames out to the socket.
extension HTTP2Connection {
    /// Edge-triggered: drain the socket until EAGAIN.
    func readAvailable() {
        let buf = loop.readBuffer
        var gotData = false
        while !closed {
            // TLS: gnutls may hold decrypted bytes beyond what the socket
            // signals; reading until AGAIN drains both.
            let n = io.recv(buf.baseAddress!, buf.count)
            if n > 0 {
                gotData = true
                inRecv = true
                let rv = nghttp2_session_mem_recv(session, buf.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
                inRecv = false
                if terminating {  // GOAWAY queued by a flood guard
                    flush()
                    close()
                    return
                }
                if rv < 0 {
                    context.logger.debug("h2 \(remoteAddress): \(String(cString: nghttp2_strerror(Int32(rv))))")
                    flush()  // GOAWAY if nghttp2 queued one
                    close()
                    return
                }
                continue
            }
            if n == 0 {
                close()
                return
            }  // peer closed
            if n == SocketIO.again { break }
            close()
            return
        }
        // A client with Nagle on holds its next small segment (a body after
        // its headers, or the next request) until this data is ACKed. When
        // every request read so far was answered inline, flush() right after
        // this sends the ACK with the responses. Otherwise (nothing to send,
        // a request still arriving, a write waiting for its commit) ACK now,
        // not after the 40 ms delayed-ACK timer. Linux clears quick-ack on its
        // own, so it is re-armed per read; not unconditionally, because a pure
        // ACK per request was ~9 % of a point read's CPU (DelayedAckTests).
        guard gotData, let session else { return }
        if nghttp2_session_want_write(session) == 0 || unansweredStreams > 0 {
            SocketOptions.setQuickAck(fd)
        }
    }

    /// Sends pending output, then pulls more frames from nghttp2, until it has
    /// nothing more or the socket is full (EAGAIN → wait for EPOLLOUT edge).
    func flush() {
        guard !closed, let session, !inRecv else { return }
        while true {
            while outOffset < outBuf.count {
                // TLS: an AGAIN keeps the same bytes pending (gnutls holds
                // the encrypted record and is called again with them).
                let n = outBuf.withUnsafeBytes {
                    io.send($0.baseAddress! + outOffset, $0.count - outOffset)
                }
                if n > 0 {
                    outOffset += n
                    continue
                }
                if n == SocketIO.again { return }
                close()
                return
            }
            outBuf.removeAll(keepingCapacity: true)
            outOffset = 0
            // Coalesce frames into one send.
            while outBuf.count < HTTP2Connection.outHighWater {
                var ptr: UnsafePointer<UInt8>?
                let n = nghttp2_session_mem_send(session, &ptr)
                if n < 0 {
                    close()
                    return
                }
                if n == 0 { break }
                outBuf.append(contentsOf: UnsafeBufferPointer(start: ptr, count: n))
            }
            if outBuf.isEmpty { break }
        }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            close()
        }
    }
}
