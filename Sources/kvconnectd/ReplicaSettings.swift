import Foundation
import KVConnect
import KVEngine
import KVPostgres
import Logging

/// The `replica_database` setting (and a `databases_file` entry's `replica:`):
/// a PostgreSQL hot standby that serves eventual reads (docs/ha.md). The one
/// place that checks it, opens it and reports it in /metrics.
enum ReplicaSettings {
    typealias Invalid = Settings.Invalid

    static func validate(_ spec: DatabaseSpec, primary: DatabaseLocation) throws {
        guard let replica = spec.replica else { return }
        guard primary.isPostgres else {
            throw Invalid(
                description:
                    "databases: '\(spec.name)': a replica needs a PostgreSQL primary (SQLite has no standby; see docs/ha.md)"
            )
        }
        guard PostgresURI.isPostgres(replica) else {
            throw Invalid(description: "databases: '\(spec.name)': replica must be a postgres:// URI of a hot standby")
        }
        _ = try PostgresURI(replica)
    }

    static func display(_ uri: String) -> String { (try? PostgresURI(uri).masked) ?? "(invalid URI)" }

    /// Opens the standby (it may be down: the route then sends eventual
    /// reads to the primary until it answers). The primary's password file
    /// applies to the standby too.
    static func route(
        for spec: DatabaseSpec, primary: any KVStorage, maxLagMs: Int,
        logger: Logger
    ) throws -> ReplicaRoute? {
        guard let text = spec.replica else { return nil }
        var uri = try PostgresURI(text)
        if let file = spec.passwordFile, !uri.hasPassword {
            let password = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .newlines)
            uri = try PostgresURI(uri.withPassword(password))
        }
        let store = PostgresReplicaStore(url: uri.text, databaseId: primary.databaseId)
        logger.info(
            "eventual reads from a hot standby",
            metadata: [
                "database": "\(spec.name)", "replica": "\(uri.masked)",
                "max_lag_ms": "\(maxLagMs == 0 ? "none" : String(maxLagMs))"
            ])
        return ReplicaRoute(store: store, maxLagMs: maxLagMs == 0 ? nil : Int64(maxLagMs), logger: logger)
    }

    /// Prometheus text for every tenant with a replica, appended to /metrics.
    static func metrics(_ tenants: [Tenant]) -> String {
        let withReplica = tenants.filter { $0.replica != nil }
        if withReplica.isEmpty { return "" }
        var up =
            "# HELP kvconnectd_replica_up 1 when the standby answers and is in recovery.\n# TYPE kvconnectd_replica_up gauge\n"
        var lag =
            "# HELP kvconnectd_replica_lag_seconds Replication lag of the standby (replay behind the primary).\n# TYPE kvconnectd_replica_lag_seconds gauge\n"
        var serving =
            "# HELP kvconnectd_replica_serving_reads 1 when eventual reads go to the standby, 0 when to the primary (lagging or down).\n# TYPE kvconnectd_replica_serving_reads gauge\n"
        for t in withReplica {
            let route = t.replica!
            let label = "{database_id=\"\(t.databaseId)\"}"
            switch route.state {
            case .streaming(let ms):
                up += "kvconnectd_replica_up\(label) 1\n"
                lag += "kvconnectd_replica_lag_seconds\(label) \(Double(ms) / 1000)\n"
            case .unavailable:
                up += "kvconnectd_replica_up\(label) 0\n"
            }
            // Routing decision as of now (the same one the next read makes).
            let now = route.readStore(primary: t.store) === route.store
            serving += "kvconnectd_replica_serving_reads\(label) \(now ? 1 : 0)\n"
        }
        return up + lag + serving
    }
}
