/// Errors of the TLS configuration (start and reload).
public enum TLSError: Error, CustomStringConvertible {
    case notConfigured
    case unreadable(String, String)
    case load(cert: String, key: String, reason: String)

    public var description: String {
        switch self {
        case .notConfigured:
            return "TLS is not configured (no certificate and key files)"
        case let .unreadable(path, reason):
            return "cannot read \(path): \(reason)"
        case let .load(cert, key, reason):
            return "cannot load TLS certificate \(cert) with key \(key): \(reason)"
        }
    }
}
