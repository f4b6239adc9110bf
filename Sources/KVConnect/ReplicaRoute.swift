import Foundation
import KVEngine
import Logging
import Synchronization

/// Where a tenant's eventual reads go: its replica store while that is
/// healthy and within the lag bound, the primary otherwise. Switches are
/// logged once per change of state, never per request.
public final class ReplicaRoute: Sendable {
    public let store: any KVStorage
    /// Largest replication lag still served by the replica; nil = no bound.
    public let maxLagMs: Int64?
    private let health: (any ReplicaHealth)?
    private let logger: Logger
    /// Whether the last routing decision picked the replica.
    private let usingReplica = Mutex(true)

    /// `health`: where the lag comes from; by default the store itself if
    /// it implements `ReplicaHealth`.
    public init(
        store: any KVStorage, maxLagMs: Int64?, health: (any ReplicaHealth)? = nil,
        logger: Logger = Logger(label: "kvconnectd.replica")
    ) {
        self.store = store
        self.maxLagMs = maxLagMs
        self.health = health ?? store as? any ReplicaHealth
        self.logger = logger
    }

    /// The replica's last measured state; a store without `ReplicaHealth`
    /// is taken as always current.
    public var state: ReplicaState {
        health?.replicaState ?? .streaming(lagMs: 0)
    }

    /// The store an eventual read should use now.
    public func readStore(primary: any KVStorage) -> any KVStorage {
        let (useReplica, reason): (Bool, String)
        switch state {
        case .streaming(let lag):
            if let bound = maxLagMs, lag > bound {
                (useReplica, reason) = (false, "replication lag \(lag) ms exceeds the bound of \(bound) ms")
            } else {
                (useReplica, reason) = (true, "")
            }
        case .unavailable(let why):
            (useReplica, reason) = (false, "replica unavailable: \(why)")
        }
        let changed = usingReplica.withLock { using in
            defer { using = useReplica }
            return useReplica != using
        }
        if changed {
            if useReplica {
                logger.notice("eventual reads served by the replica again", metadata: ["replica": "\(store.location)"])
            } else {
                logger.warning(
                    "eventual reads served by the primary: \(reason)", metadata: ["replica": "\(store.location)"])
            }
        }
        return useReplica ? store : primary
    }

    /// Whether the last routing decision picked the replica (for metrics).
    public var servingFromReplica: Bool { usingReplica.withLock { $0 } }
}
