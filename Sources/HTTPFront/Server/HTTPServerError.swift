import Glibc

/// Why the server could not start (a system call or libmicrohttpd failed).
public enum HTTPServerError: Error, CustomStringConvertible {
    case system(String, Int32)
    case microhttpd(String)

    public var description: String {
        switch self {
        case let .system(call, err): return "\(call) failed: \(String(cString: strerror(err)))"
        case let .microhttpd(msg): return "libmicrohttpd: \(msg)"
        }
    }
}
