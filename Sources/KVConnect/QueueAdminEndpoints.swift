import Crypto
import Foundation
import KVEngine

/// Queue administration over HTTP (docs/queues.md, "Administration"), for a
/// running daemon; `kvconnectd queue ...` is the client. Authenticated with
/// the database's *access token* (`Authorization: Bearer <access token>`,
/// the token of the metadata exchange): it selects the database. Read-only
/// tokens may look (stats, list, peek), not change (purge, delete, redrive).
///
///     GET    /admin/queue/stats                    {"ready","delayed","inflight","oldestDueAt","oldestDueMs"}
///     GET    /admin/queue/messages?after=ID&limit=N {"messages":[...], "next": ID | null}
///     GET    /admin/queue/messages/ID              one message, 404 if none
///     DELETE /admin/queue/messages/ID              {"deleted":1}, 404 if none
///     POST   /admin/queue/purge                    {"deleted":n}
///     POST   /admin/queue/redrive {"key":K}|{"prefix":K} [,"limit":n]   {"redriven":n,"keys":[...]}
///
/// Keys are JSON in the export format (`["dlq", {"bigint":"7"}]`, see
/// KVEngine/ExportFormat). Payloads are shown decoded the same way, and as
/// base64 of the V8 bytes.
extension KVConnectService {
    static let adminPrefix = "/admin/queue"
    /// Longest page of `messages` and most dead letters per redrive call.
    static let adminPageMax = 1000

    func queueAdmin(_ request: ProtocolRequest, respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        let tenant: Tenant, scope: DataPlaneToken.Scope
        switch adminTenant(request) {
        case .success(let t): (tenant, scope) = t
        case .failure(let e): return respond(.error(e))
        }
        let rest = String(request.path.dropFirst(Self.adminPrefix.count))
        let writes = ["/purge", "/redrive"].contains(rest) || request.method == "DELETE"
        if writes && scope == .readOnly {
            return respond(.text(403, "this token is read-only: queue \(rest.dropFirst()) is not allowed"))
        }
        let store = tenant.store
        let now = clock.nowMs()
        do throws(ProtocolError) {
            switch (request.method, rest) {
            case ("GET", "/stats"):
                let o = try Self.storageCall { try store.queueOverview(nowMs: now) }
                respond(
                    Self.json(
                        200,
                        .object([
                            ("databaseId", .string(tenant.databaseId)), ("delayed", .int(o.delayed)),
                            ("inflight", .int(o.inflight)),
                            ("oldestDueAt", o.oldestDueMs.map { .string(MetadataExchange.rfc3339(ms: $0)) } ?? .null),
                            ("oldestDueMs", o.oldestDueMs.map { .int($0) } ?? .null), ("ready", .int(o.ready))
                        ])))
            case ("GET", "/messages"):
                let q = Self.query(request.query)
                let after = try Self.queryInt(q, "after") ?? 0
                let limit = min(try Self.queryInt(q, "limit") ?? 100, Int64(Self.adminPageMax))
                let page = try Self.storageCall {
                    try store.listQueueMessages(afterId: after, limit: Int(limit), nowMs: now)
                }
                let next: JSONValue = page.count == Int(limit) ? .int(page.last!.id) : .null
                respond(Self.json(200, .object([("messages", .array(page.map(Self.messageJSON))), ("next", next)])))
            case ("GET", let r) where r.hasPrefix("/messages/"):
                let id = try Self.messageId(r)
                guard let m = try Self.storageCall({ try store.queueMessage(id: id, nowMs: now) }) else {
                    throw ProtocolError(status: 404, "no such message: \(id)")
                }
                respond(Self.json(200, Self.messageJSON(m)))
            case ("DELETE", let r) where r.hasPrefix("/messages/"):
                let id = try Self.messageId(r)
                store.deleteQueueMessages(ids: [id]) { result in
                    switch result {
                    case .success(0): respond(.text(404, "no such message: \(id)"))
                    case .success(let n): respond(Self.json(200, .object([("deleted", .int(n))])))
                    case .failure(let e): respond(.error(ProtocolError(e)))
                    }
                }
            case ("POST", "/purge"):
                store.deleteQueueMessages(ids: nil) { result in
                    switch result {
                    case .success(let n): respond(Self.json(200, .object([("deleted", .int(n))])))
                    case .failure(let e): respond(.error(ProtocolError(e)))
                    }
                }
            case ("POST", "/redrive"):
                try redrive(store, request.body, nowMs: now, respond: respond)
            case (_, "/stats"), (_, "/messages"):
                respond(methodNotAllowed(request, allow: "GET"))
            case (_, let r) where r.hasPrefix("/messages/"):
                respond(methodNotAllowed(request, allow: "GET, DELETE"))
            case (_, "/purge"), (_, "/redrive"):
                respond(methodNotAllowed(request, allow: "POST"))
            default:
                respond(.text(404, "not found: \(request.path)"))
            }
        } catch {
            respond(.error(error))
        }
    }

    /// The tenant whose access token (read-write or read-only) is presented.
    private func adminTenant(_ request: ProtocolRequest) -> Result<(Tenant, DataPlaneToken.Scope), ProtocolError> {
        guard let presented = bearerToken(request) else {
            return .failure(.unauthorized("missing access token: send 'Authorization: Bearer <access token>'"))
        }
        let digest = Array(SHA256.hash(data: Array(presented.utf8)))
        var match: (Tenant, DataPlaneToken.Scope)?
        for t in tenants {
            if let scope = t.scope(forPresented: digest), match == nil { match = (t, scope) }
        }
        guard let match else { return .failure(.unauthorized("invalid access token")) }
        return .success(match)
    }

    /// Puts dead letters back into the queue: for each entry at `key` (or
    /// under `prefix`), one atomic write checks the entry is unchanged,
    /// deletes it and enqueues its value, due now, with Deno's default
    /// backoff schedule and the same key as its dead-letter key. A key that
    /// changed meanwhile is skipped (not counted).
    private func redrive(
        _ store: any KVStorage, _ body: [UInt8], nowMs: Int64,
        respond: @escaping @Sendable (ProtocolResponse) -> Void
    ) throws(ProtocolError) {
        let j = try Self.jsonBody(body)
        let limit = Int(
            try Self.integer(j, "limit", in: 1...Int64(Self.adminPageMax), unit: "dead letters")
                ?? Int64(Self.adminPageMax))
        let range: ReadRange
        do {
            if let k = j["key"] {
                let key = try ExportFormat.keyBytes(k)
                range = ReadRange(start: key, end: key + [0x00], limit: 1)
            } else if let p = j["prefix"] {
                let prefix = try ExportFormat.keyBytes(p)
                guard !prefix.isEmpty else {
                    throw ProtocolError.badRequest("invalid body: the prefix must not be empty")
                }
                range = ReadRange(start: prefix, end: prefix + [0xFF], limit: limit)
            } else {
                throw ProtocolError.badRequest("invalid body: expected {\"key\": [...]} or {\"prefix\": [...]}")
            }
        } catch let e as ProtocolError {
            throw e
        } catch {
            throw .badRequest("invalid body: \(error)")
        }
        let entries = try Self.storageCall { try store.snapshotRead([range], nowMs: nowMs).first ?? [] }
        let v8 = entries.filter { $0.value.encoding == .v8 }
        if v8.isEmpty {
            return respond(Self.json(200, .object([("keys", .array([])), ("redriven", .int(0))])))
        }
        let done = Gather<Bytes>(count: v8.count) { keys in
            respond(
                Self.json(
                    200, .object([("keys", .array(keys.map(ExportFormat.keyJSON))), ("redriven", .int(keys.count))])))
        }
        for e in v8 {
            let write = AtomicWrite(
                checks: [Check(key: e.key, versionstamp: e.versionstamp)],
                mutations: [Mutation(key: e.key, kind: .delete)],
                enqueues: [
                    Enqueue(
                        payload: e.value.data, deadlineMs: nowMs, keysIfUndelivered: [e.key],
                        backoffSchedule: Self.denoDefaultBackoff)
                ])
            store.atomicWrite(write) { r in
                if case .success(.committed) = r { done.add(e.key) } else { done.add(nil) }
            }
        }
    }

    /// What Deno's own queue retries with when no backoffSchedule is given.
    static let denoDefaultBackoff: [UInt32] = [100, 1000, 5000, 30000, 60000]

    /// One message (members sorted).
    static func messageJSON(_ m: QueueMessageInfo) -> JSONValue {
        var o: [(String, JSONValue)] = [
            ("attempt", .int(m.attempt)), ("backoffSchedule", .array(m.backoffSchedule.map { .int($0) })),
            ("deadline", .string(MetadataExchange.rfc3339(ms: m.deadlineMs))), ("deadlineMs", .int(m.deadlineMs)),
            ("id", .int(m.id)), ("keysIfUndelivered", .array(m.keysIfUndelivered.map(ExportFormat.keyJSON)))
        ]
        if let l = m.leaseUntilMs { o.append(("leaseUntil", .string(MetadataExchange.rfc3339(ms: l)))) }
        o += [
            ("leases", .int(m.leases)), ("payload", ExportFormat.readableV8(m.payload)),
            ("payloadBase64", .string(Data(m.payload).base64EncodedString())), ("state", .string(m.state.rawValue))
        ]
        return .object(o)
    }

    private static func messageId(_ rest: String) throws(ProtocolError) -> Int64 {
        let text = rest.dropFirst("/messages/".count)
        guard let id = Int64(text), id > 0 else {
            throw .badRequest("invalid message id '\(text)': expected a positive integer")
        }
        return id
    }
}
