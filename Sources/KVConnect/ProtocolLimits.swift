/// Request limits. Defaults follow the reference server (denokv), except
/// where Deno's own client sends more (checks: 100), so that whatever Deno
/// accepts against its local database also works remotely.
public struct ProtocolLimits: Sendable, Equatable {
    public var maxReadKeyBytes = 2049
    public var maxWriteKeyBytes = 2048
    public var maxValueBytes = 65_536
    public var maxReadRanges = 10
    public var maxReadEntries = 1000
    public var maxChecks = 100
    public var maxMutationsAndEnqueues = 1000
    public var maxTotalWriteBytes = 819_200
    public var maxEnqueueDelayMs: Int64 = 30 * 24 * 3600 * 1000
    public var maxKeysIfUndelivered = 10
    public var maxBackoffSteps = 10
    public var maxBackoffDelayMs: UInt32 = 3_600_000
    public var maxWatchedKeys = 10

    public init() {}
}
