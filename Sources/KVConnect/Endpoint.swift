/// Every route the server answers outside the console, as a value. A request's
/// method and path are resolved once (`RouteTable.resolve`, in the adapter);
/// the service dispatches on the result, the observer labels metrics and logs
/// with it and the adapter reads it (long-polls are not waited for at
/// shutdown). The database is not part of any path: the token selects it.
public enum Endpoint: Sendable, Hashable {
    /// `POST /`; `replica`: `POST /replica`, whose only endpoint is the replica's (see ReplicaEndpoint).
    case metadataExchange(replica: Bool)
    /// `POST <ep>/snapshot_read`; `replica`: `<ep>/replica/snapshot_read`, eventual reads.
    case snapshotRead(replica: Bool)
    /// `POST <ep>/atomic_write`; under `<ep>/replica` it still writes to the primary.
    case atomicWrite(replica: Bool)
    /// `POST <ep>/watch`; under `<ep>/replica` it still watches the primary.
    case watch(replica: Bool)
    /// `POST <ep>/queue/lease`, `/ack`, `/fail`: pull delivery (QueueEndpoints).
    case queueLease
    case queueAck
    case queueFail
    /// `/admin/queue/...` (QueueAdminEndpoints): its sub-paths and their
    /// methods are checked there, after the access token.
    case queueAdmin
    /// `GET /healthz`, `GET /readyz`, `GET /metrics` (also HEAD).
    case health
    case ready
    case metrics

    /// The methods the endpoint takes; nil = any (its handler checks).
    public var methods: [String]? {
        switch self {
        case .health, .ready, .metrics: return ["GET", "HEAD"]
        case .queueAdmin: return nil
        default: return ["POST"]
        }
    }

    /// A pull worker's long-poll: may wait for minutes, so graceful shutdown
    /// does not wait for it.
    public var isLongPoll: Bool { self == .queueLease }

    /// Authorized by a data-plane token (so the database id a client names
    /// in its headers is checked against the token).
    var isDataPath: Bool {
        switch self {
        case .snapshotRead, .atomicWrite, .watch, .queueLease, .queueAck, .queueFail: return true
        default: return false
        }
    }

    /// The `endpoint` label of request metrics and log lines: a fixed list, so
    /// no client text ever becomes a label (unknown paths are "other").
    var metricLabel: String {
        switch self {
        case .metadataExchange(let replica): return replica ? "replica_metadata" : "metadata"
        case .snapshotRead(let replica): return replica ? "replica_snapshot_read" : "snapshot_read"
        case .atomicWrite(let replica): return replica ? "replica_atomic_write" : "atomic_write"
        case .watch(let replica): return replica ? "replica_watch" : "watch"
        case .queueLease: return "queue_lease"
        case .queueAck: return "queue_ack"
        case .queueFail: return "queue_fail"
        case .queueAdmin: return "queue_admin"
        case .health: return "healthz"
        case .ready: return "readyz"
        case .metrics: return "metrics"
        }
    }

    static let unroutedLabel = "other"
}

/// What a method and path resolve to.
public enum Route: Sendable, Equatable {
    case endpoint(Endpoint)
    /// A known path with another method: 405 with `Allow`.
    case methodNotAllowed(Endpoint, allow: String)
    /// 404.
    case notFound

    /// The endpoint of the path, whether or not the method fits (a 405 is
    /// counted under its endpoint).
    public var endpoint: Endpoint? {
        switch self {
        case .endpoint(let e), .methodNotAllowed(let e, _): return e
        case .notFound: return nil
        }
    }
}

/// The one list of paths. `endpointPath` is the data path's prefix (`/v2`).
public struct RouteTable: Sendable {
    public let endpointPath: String
    /// The replica handle's data path, `<ep>/replica` (see ReplicaEndpoint).
    public var replicaEndpointPath: String { endpointPath + Self.replicaSuffix }

    /// The replica handle's metadata exchange.
    static let replicaMetadataPath = "/replica"
    /// Under the endpoint path: the replica handle's data path.
    static let replicaSuffix = "/replica"

    public init(endpointPath: String) {
        self.endpointPath = endpointPath
    }

    public func resolve(method: String, path: String) -> Route {
        guard let endpoint = endpoint(path: path) else { return .notFound }
        if let methods = endpoint.methods, !methods.contains(method) {
            return .methodNotAllowed(endpoint, allow: methods.joined(separator: ", "))
        }
        return .endpoint(endpoint)
    }

    /// The endpoint a path names, by exact match (no prefix or suffix
    /// matching, so `<ep>/snapshot_read/x` is unknown), except the queue
    /// administration's sub-paths.
    func endpoint(path: String) -> Endpoint? {
        switch path {
        case "/": return .metadataExchange(replica: false)
        case Self.replicaMetadataPath: return .metadataExchange(replica: true)
        case "/healthz": return .health
        case "/readyz": return .ready
        case "/metrics": return .metrics
        default: break
        }
        if path.hasPrefix(KVConnectService.adminPrefix + "/") { return .queueAdmin }
        guard path.hasPrefix(endpointPath) else { return nil }
        var rest = path.dropFirst(endpointPath.count)
        let replica = rest.hasPrefix(Self.replicaSuffix + "/")
        if replica { rest = rest.dropFirst(Self.replicaSuffix.count) }
        switch rest {
        case "/snapshot_read": return .snapshotRead(replica: replica)
        case "/atomic_write": return .atomicWrite(replica: replica)
        case "/watch": return .watch(replica: replica)
        case "/queue/lease" where !replica: return .queueLease
        case "/queue/ack" where !replica: return .queueAck
        case "/queue/fail" where !replica: return .queueFail
        default: return nil
        }
    }
}
