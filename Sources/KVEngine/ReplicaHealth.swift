// An optional capability of a storage backend that reads from a replica
// (a PostgreSQL hot standby): how far behind the primary it is. The layer
// above uses it to decide whether eventual reads may still go to the replica.

/// What a replica store last measured about itself. Implementations sample
/// in the background: reading it must be cheap (it is asked on every read).
public enum ReplicaState: Sendable, Equatable {
    /// Reachable and replaying; `lagMs` is how far replay trails the primary
    /// (0 when everything received has been replayed).
    case streaming(lagMs: Int64)
    /// Not reachable, or not a standby; `reason` is for the log.
    case unavailable(reason: String)
}

public protocol ReplicaHealth: AnyObject, Sendable {
    var replicaState: ReplicaState { get }
}
