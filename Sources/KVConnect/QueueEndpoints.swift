import Foundation
import KVEngine

/// Pull delivery for workers that cannot expose a webhook (docs/queues.md):
///
/// - `POST <ep>/queue/lease` `{"waitMs":n,"visibilityTimeoutMs":n}` (both
///   optional) → 200 `{"id","messageId","attempt","payload","leaseExpiresAt"}`
///   or 204 when nothing became ready within the wait. The long-poll holds no
///   thread: the answer comes from the engine's queue thread.
/// - `POST <ep>/queue/ack` / `<ep>/queue/fail` `{"id":"<lease id>"}` → 200,
///   404 (unknown message: already settled or dead-lettered), 409 (the lease
///   expired and the message is ready again or leased by someone else).
/// - Batches: lease `{"max":n}` → `{"messages":[...]}` (claimed in one
///   transaction); ack/fail `{"ids":[...]}` → `{"results":[...]}` (settles
///   arriving together share one transaction).
///
/// Same token rules as atomic_write: a read-only token gets 403.
extension KVConnectService {
    /// `endpoint`: `.queueLease`, `.queueAck` or `.queueFail`.
    func queueEndpoint(
        _ request: ProtocolRequest, _ endpoint: Endpoint,
        respond: @escaping @Sendable (ProtocolResponse) -> Void
    ) {
        let tenant: Tenant
        let body: JSONValue
        do {
            let (t, token) = try authorize(request, json: true)
            if token.scope == .readOnly {
                throw ProtocolError(status: 403, "this token is read-only: the queue endpoints are not allowed")
            }
            tenant = t
            body = try Self.jsonBody(request.body)
        } catch let e as ProtocolError {
            return respond(.error(e))
        } catch {
            return respond(.error(ProtocolError(status: 500, "internal error: \(error)", retryAfterSeconds: 1)))
        }
        if endpoint == .queueLease {
            lease(tenant, body, respond: respond)
        } else {
            settle(tenant, body, ack: endpoint == .queueAck, respond: respond)
        }
    }

    /// Most messages one lease or settle request may carry (`max`, `ids`).
    static let queueBatchMax = 256

    private func lease(_ tenant: Tenant, _ body: JSONValue, respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        let wait: Int64, visibility: Int64, max: Int64?
        do throws(ProtocolError) {
            wait = min(
                try Self.integer(body, "waitMs", in: 0...Int64.max, unit: "milliseconds") ?? 0,
                config.queueLongPollMaxMs)
            visibility =
                try Self.integer(body, "visibilityTimeoutMs", in: 100...43_200_000, unit: "milliseconds")
                ?? config.queueVisibilityTimeoutMs
            max = try Self.integer(body, "max", in: 1...Int64(Self.queueBatchMax), unit: "messages")
        } catch {
            return respond(.error(error))
        }
        // The batch is claimed in one transaction: the first message may be
        // waited for, the others are what is due at that moment.
        tenant.store.leaseQueueMessage(visibilityMs: visibility, waitMs: wait, max: Int(max ?? 1)) { result in
            switch result {
            case .success(let ms) where ms.isEmpty:
                respond(ProtocolResponse(status: 204))
            case .success(let ms):
                respond(
                    Self.json(
                        200,
                        max == nil ? Self.leaseJSON(ms[0]) : .object([("messages", .array(ms.map(Self.leaseJSON)))])))
            case .failure(let e):
                respond(.error(ProtocolError(e)))
            }
        }
    }

    static func leaseJSON(_ m: QueueMessage) -> JSONValue {
        .object([
            ("attempt", .int(m.attempt)), ("id", .string(m.leaseHandle)),
            ("leaseExpiresAt", .string(MetadataExchange.rfc3339(ms: m.leaseUntilMs))),
            ("messageId", .string(String(m.id))),
            ("payload", .string(Data(m.payload).base64EncodedString()))
        ])
    }

    private func settle(
        _ tenant: Tenant, _ body: JSONValue, ack: Bool,
        respond: @escaping @Sendable (ProtocolResponse) -> Void
    ) {
        if let ids = body["ids"] {
            // Batch: {"ids": [...]} → {"results": [{"id", "status", ...}]} in the same order.
            guard case .array(let items) = ids, !items.isEmpty, items.count <= Self.queueBatchMax else {
                return respond(.error(.badRequest("invalid ids: expected 1 ... \(Self.queueBatchMax) lease ids")))
            }
            var list: [String] = []
            for item in items {
                guard case .string(let text) = item else {
                    return respond(.error(.badRequest("invalid ids: expected 1 ... \(Self.queueBatchMax) lease ids")))
                }
                list.append(text)
            }
            var parsed: [(Int64, Int64)] = []
            for text in list {
                guard let p = QueueMessage.parseLeaseHandle(text) else {
                    return respond(.error(.badRequest("invalid id '\(text)': expected an id from /queue/lease")))
                }
                parsed.append(p)
            }
            let gather = Gather<(Int, JSONValue)>(count: parsed.count) { results in
                let ordered = results.sorted { $0.0 < $1.0 }.map(\.1)
                respond(Self.json(200, .object([("results", .array(ordered))])))
            }
            for (i, (id, seq)) in parsed.enumerated() {
                let completion: @Sendable (Result<QueueSettleResult, KVError>) -> Void = { [list] r in
                    gather.add((i, Self.settleJSON(r, id: list[i])))
                }
                if ack {
                    tenant.store.ackQueueMessage(id: id, leaseSeq: seq, completion: completion)
                } else {
                    tenant.store.failQueueMessage(id: id, leaseSeq: seq, completion: completion)
                }
            }
            return
        }
        guard case .string(let text)? = body["id"], let (id, seq) = QueueMessage.parseLeaseHandle(text) else {
            return respond(.error(.badRequest("invalid body: expected {\"id\":\"<id from /queue/lease>\"}")))
        }
        let completion: @Sendable (Result<QueueSettleResult, KVError>) -> Void = { result in
            switch result {
            case .success(.notFound):
                respond(.text(404, "no such message: \(id) (already acknowledged, dead-lettered or never leased)"))
            case .success(.leaseLost):
                respond(.text(409, "lease \(text) was lost: it expired and the message was made ready again"))
            case .success:
                respond(Self.json(200, Self.settleJSON(result, status: false)))
            case .failure(let e):
                respond(.error(ProtocolError(e)))
            }
        }
        if ack {
            tenant.store.ackQueueMessage(id: id, leaseSeq: seq, completion: completion)
        } else {
            tenant.store.failQueueMessage(id: id, leaseSeq: seq, completion: completion)
        }
    }

    /// One settle outcome (members sorted): `id` in a batch; `status` (in a
    /// batch) is what the single-id form answers with.
    static func settleJSON(_ r: Result<QueueSettleResult, KVError>, id: String? = nil, status: Bool = true) -> JSONValue
    {
        let code: Int, result: String
        var reason: String?, retryAt: String?, versionstamp: String?
        switch r {
        case .success(.acknowledged): (code, result) = (200, "acknowledged")
        case .success(.retryScheduled(let at)):
            (code, result) = (200, "retryScheduled")
            retryAt = MetadataExchange.rfc3339(ms: at)
        case .success(.deadLettered(let vs)):
            (code, result) = (200, "deadLettered")
            versionstamp = vs.map(Versionstamps.hex)
        case .success(.notFound): (code, result) = (404, "notFound")
        case .success(.leaseLost): (code, result) = (409, "leaseLost")
        case .failure(let e):
            let p = ProtocolError(e)
            (code, result, reason) = (p.status, "error", p.message)
        }
        var o: [(String, JSONValue)] = []
        if let id { o.append(("id", .string(id))) }
        if let reason { o.append(("reason", .string(reason))) }
        o.append(("result", .string(result)))
        if let retryAt { o.append(("retryAt", .string(retryAt))) }
        if status { o.append(("status", .int(code))) }
        if let versionstamp { o.append(("versionstamp", .string(versionstamp))) }
        return .object(o)
    }
}
