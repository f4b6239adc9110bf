import Glibc

// Small socket helpers shared by the accept thread and both protocol paths.
enum SocketOptions {
    /// Disable Nagle: responses are written in one go and must not wait for
    /// the peer's delayed ACK.
    static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Ask the kernel to ACK immediately. Linux clears this flag again on its
    /// own, so it has to be re-armed after each read.
    static func setQuickAck(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), Int32(TCP_QUICKACK), &one, socklen_t(MemoryLayout<Int32>.size))
    }

    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL, 0)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    static func setReuseAddr(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// close() that retries nothing: on Linux the fd is released even on EINTR.
    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// "ip:port" for an IPv4/IPv6 socket address.
    static func describe(_ storage: sockaddr_storage) -> String {
        var storage = storage
        return withUnsafePointer(to: &storage) { ptr -> String in
            var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            switch Int32(ptr.pointee.ss_family) {
            case AF_INET:
                return ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var addr = sin.pointee.sin_addr
                    inet_ntop(AF_INET, &addr, &buf, socklen_t(buf.count))
                    return "\(cString(buf)):\(UInt16(bigEndian: sin.pointee.sin_port))"
                }
            case AF_INET6:
                return ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var addr = sin6.pointee.sin6_addr
                    inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count))
                    return "[\(cString(buf))]:\(UInt16(bigEndian: sin6.pointee.sin6_port))"
                }
            default:
                return ""
            }
        }
    }
}

/// A NUL-terminated C string buffer as a Swift string.
func cString(_ buf: [CChar]) -> String {
    buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}
