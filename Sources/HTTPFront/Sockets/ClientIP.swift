import Glibc

/// A client address without the port (IPv4 as IPv4-mapped IPv6), the key of
/// the per-IP connection count.
struct ClientIP: Hashable {
    var hi: UInt64
    var lo: UInt64

    init(_ storage: sockaddr_storage) {
        var storage = storage
        var bytes = [UInt8](repeating: 0, count: 16)
        withUnsafePointer(to: &storage) { ptr in
            switch Int32(ptr.pointee.ss_family) {
            case AF_INET:
                ptr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr.s_addr  // network order
                    bytes[10] = 0xff
                    bytes[11] = 0xff
                    withUnsafeBytes(of: &a) { for i in 0..<4 { bytes[12 + i] = $0[i] } }
                }
            case AF_INET6:
                ptr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var a = sin6.pointee.sin6_addr
                    withUnsafeBytes(of: &a) { for i in 0..<16 { bytes[i] = $0[i] } }
                }
            default:
                break  // AF_UNIX etc.: all share one key
            }
        }
        hi = bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        lo = bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    }
}
