// The queue's vocabulary, shared by every backend and the layers above.

/// Delivers one claimed message; calls `done(true)` to acknowledge or
/// `done(false)` for a failed attempt, exactly once, from any thread. Must not
/// block: it is called on the dispatcher thread.
public typealias QueueDeliverFunction = @Sendable (QueueMessage, _ done: @escaping @Sendable (Bool) -> Void) -> Void

/// The poison limit every backend starts with (`queue_max_leases`): a
/// message whose this-many-th lease ends without ack or fail is dead-lettered.
public enum QueuePoisonLimit {
    public static let defaultMaxLeases = 10
}

/// Push configuration (see `KVStore.startQueueDelivery`).
public struct QueuePushOptions: Sendable {
    /// Deliveries in flight at once.
    public var concurrency: Int
    /// Lease of a pushed message: a safety net only, longer than the
    /// deliverer's own timeout (the deliverer always reports back).
    public var leaseMs: Int64
    public init(concurrency: Int = 16, leaseMs: Int64 = 60_000) {
        self.concurrency = concurrency
        self.leaseMs = leaseMs
    }
}

public struct QueueStats: Sendable, Equatable {
    public var acknowledged = 0
    public var failedAttempts = 0
    public var deadLettered = 0
    public var leasesExpired = 0
    /// Dead-lettered because their leases kept expiring (poison messages;
    /// also counted in `deadLettered`).
    public var poisoned = 0
    public init() {}
}

/// A claimed (in-flight) message, as handed to a deliverer or a pull worker.
public struct QueueMessage: Sendable, Equatable {
    /// Stable across redeliveries (`queue_messages.id`).
    public var id: Int64
    /// Generation of the current lease; settle with it.
    public var leaseSeq: Int64
    /// 1 for the first delivery attempt; failed attempts + 1.
    public var attempt: Int
    /// V8-serialized payload as enqueued.
    public var payload: Bytes
    public var deadlineMs: Int64
    public var leaseUntilMs: Int64
    public var keysIfUndelivered: [Bytes]
    public var backoffSchedule: [UInt32]

    public init(
        id: Int64, leaseSeq: Int64, attempt: Int, payload: Bytes, deadlineMs: Int64, leaseUntilMs: Int64,
        keysIfUndelivered: [Bytes], backoffSchedule: [UInt32]
    ) {
        self.id = id
        self.leaseSeq = leaseSeq
        self.attempt = attempt
        self.payload = payload
        self.deadlineMs = deadlineMs
        self.leaseUntilMs = leaseUntilMs
        self.keysIfUndelivered = keysIfUndelivered
        self.backoffSchedule = backoffSchedule
    }

    /// Opaque lease handle for the pull API: "<id>-<leaseSeq>".
    public var leaseHandle: String { "\(id)-\(leaseSeq)" }

    public static func parseLeaseHandle(_ s: String) -> (id: Int64, leaseSeq: Int64)? {
        let parts = s.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let id = Int64(parts[0]), let seq = Int64(parts[1]) else { return nil }
        return (id, seq)
    }
}

/// Outcome of acknowledging or failing a lease.
public enum QueueSettleResult: Sendable, Equatable {
    /// Acknowledged: the message is deleted.
    case acknowledged
    /// Failed; retried at this time (Unix ms).
    case retryScheduled(atMs: Int64)
    /// Failed with the schedule exhausted: the payload was written to every
    /// `keys_if_undelivered` key in a commit with this versionstamp (nil when
    /// there were no keys) and the message was removed.
    case deadLettered(versionstamp: Versionstamp?)
    /// No such message (delivered, dead-lettered, or never existed).
    case notFound
    /// The message exists but this lease is no longer its current one
    /// (it expired and the message is ready again or leased by someone else).
    case leaseLost
}

public struct QueueCounts: Sendable, Equatable {
    public var ready: Int
    public var inflight: Int
    public init(ready: Int, inflight: Int) {
        self.ready = ready
        self.inflight = inflight
    }
}
