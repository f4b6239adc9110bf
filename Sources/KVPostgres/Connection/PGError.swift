import CLibPQ
import Foundation
import KVEngine

/// A failed libpq call, classified for the retry logic.
struct PGError: Error, CustomStringConvertible, Sendable {
    enum Kind: Sendable, Equatable {
        /// Serialization failure or deadlock (40001, 40P01): run the transaction again.
        case retry
        /// The connection is gone (or the server is shutting down): reconnect.
        case connectionLost
        /// Anything else (a bug, a constraint, a permission): do not retry.
        case other
    }

    var kind: Kind
    var sqlstate: String?
    var message: String
    /// Index of the failing statement within a pipeline.
    var failedAt: Int?
    /// Attached by a caller for its own recovery (the writer: what to answer
    /// if a COMMIT lost in flight took effect).
    var context: (any Sendable)? = nil

    var description: String {
        "PostgreSQL error\(sqlstate.map { " \($0)" } ?? ""): \(message)"
    }

    static func classify(sqlstate: String?, connectionBad: Bool) -> Kind {
        if connectionBad { return .connectionLost }
        guard let s = sqlstate else { return .other }
        if s == "40001" || s == "40P01" { return .retry }
        // 08: connection exception; 57P01-03: admin shutdown, crash shutdown, cannot connect now.
        if s.hasPrefix("08") || s == "57P01" || s == "57P02" || s == "57P03" { return .connectionLost }
        return .other
    }

    var asKVError: KVError {
        switch kind {
        case .retry, .connectionLost: return .unavailable("PostgreSQL unavailable: \(message)")
        case .other:
            // 53xxx: insufficient resources (disk full, out of memory, too many connections).
            if sqlstate?.hasPrefix("53") == true { return .unavailable("PostgreSQL: \(message)") }
            return .internalError("PostgreSQL: \(message)")
        }
    }
}
