import KVEngine

/// The replica data path, `<endpoint>/replica` (`RouteTable.replicaEndpointPath`;
/// its routes resolve with `replica: true`). It is listed as the `eventual`
/// endpoint of the normal metadata exchange (clients that pick
/// endpoints by consistency, like Python's denokv) and is the only endpoint
/// of the exchange at `POST /replica` (Deno, which sends every call to the
/// first `strong` endpoint, so that one is labelled strong). Its snapshot
/// reads come from the tenant's replica and always say
/// `read_is_strongly_consistent = false`, so Deno serves eventual reads from
/// it and refuses strong ones; writes and watches go to the primary.
enum ReplicaEndpoint {
    /// Reads from the replica when the route allows it, from the primary
    /// when there is none, it is unhealthy or lagging, or the read fails
    /// there (a standby that just went away).
    static func read(_ ranges: [ReadRange], tenant: Tenant) throws -> [[KVEntry]] {
        guard let route = tenant.replica else { return try tenant.store.snapshotRead(ranges) }
        let store = route.readStore(primary: tenant.store)
        if store === tenant.store { return try store.snapshotRead(ranges) }
        do {
            return try store.snapshotRead(ranges)
        } catch {
            return try tenant.store.snapshotRead(ranges)
        }
    }
}
