// The queue as an operator sees it (`kvconnectd queue ...`, `/admin/queue/...`,
// `/metrics`): counts by state and single messages. Shared by every backend.

/// Where a message is. `ready` and `delayed` are the same stored state
/// (waiting), split by whether its deadline has passed.
public enum QueueMessageState: String, Sendable, Equatable {
    /// Waiting, deadline passed: handed out as soon as a consumer asks.
    case ready
    /// Waiting, deadline in the future (delay or retry backoff).
    case delayed
    /// Leased to a webhook delivery or a pull worker.
    case inflight
}

/// Messages by state at one moment.
public struct QueueOverview: Sendable, Equatable {
    public var ready = 0
    public var delayed = 0
    public var inflight = 0
    /// Earliest deadline of a waiting (ready or delayed) message, Unix ms; nil if none.
    public var oldestDueMs: Int64?
    public init(ready: Int = 0, delayed: Int = 0, inflight: Int = 0, oldestDueMs: Int64? = nil) {
        self.ready = ready
        self.delayed = delayed
        self.inflight = inflight
        self.oldestDueMs = oldestDueMs
    }
}

/// One stored message with its delivery state.
public struct QueueMessageInfo: Sendable, Equatable {
    public var id: Int64
    public var state: QueueMessageState
    /// Number of the next (or current, when in flight) delivery attempt.
    public var attempt: Int
    /// When it is (or was) due, Unix ms.
    public var deadlineMs: Int64
    /// End of the current lease (in flight only).
    public var leaseUntilMs: Int64?
    /// Leases handed out so far (claims, including expired ones).
    public var leases: Int64
    /// V8-serialized payload as enqueued.
    public var payload: Bytes
    public var keysIfUndelivered: [Bytes]
    public var backoffSchedule: [UInt32]
    public init(
        id: Int64, state: QueueMessageState, attempt: Int, deadlineMs: Int64, leaseUntilMs: Int64?,
        leases: Int64, payload: Bytes, keysIfUndelivered: [Bytes], backoffSchedule: [UInt32]
    ) {
        self.id = id
        self.state = state
        self.attempt = attempt
        self.deadlineMs = deadlineMs
        self.leaseUntilMs = leaseUntilMs
        self.leases = leases
        self.payload = payload
        self.keysIfUndelivered = keysIfUndelivered
        self.backoffSchedule = backoffSchedule
    }
}
