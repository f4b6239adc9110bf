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
    func queueEndpoint(_ request: ProtocolRequest, respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        let tenant: Tenant
        let body: [String: Any]
        do {
            let (t, token) = try authorize(request, json: true)
            if token.scope == .readOnly {
                throw ProtocolError(status: 403, "this token is read-only: the queue endpoints are not allowed")
            }
            tenant = t
            body = try Self.jsonObject(request.body)
        } catch let e as ProtocolError {
            return respond(.error(e))
        } catch {
            return respond(.error(ProtocolError(status: 500, "internal error: \(error)", retryAfterSeconds: 1)))
        }
        let path = request.path
        if path.hasSuffix("/lease") {
            lease(tenant, body, respond: respond)
        } else {
            settle(tenant, body, ack: path.hasSuffix("/ack"), respond: respond)
        }
    }

    /// Most messages one lease or settle request may carry (`max`, `ids`).
    static let queueBatchMax = 256

    private func lease(_ tenant: Tenant, _ body: [String: Any], respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        let wait: Int64, visibility: Int64, max: Int64?
        do throws(ProtocolError) {
            wait = min(try Self.integer(body, "waitMs", in: 0...Int64.max, unit: "milliseconds") ?? 0,
                       config.queueLongPollMaxMs)
            visibility = try Self.integer(body, "visibilityTimeoutMs", in: 100...43_200_000, unit: "milliseconds")
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
                respond(max == nil ? Self.json(200, Self.leaseJSON(ms[0])) : Self.json(200, ["messages": ms.map(Self.leaseJSON)]))
            case .failure(let e):
                respond(.error(ProtocolError(e)))
            }
        }
    }

    static func leaseJSON(_ m: QueueMessage) -> [String: Any] {
        ["id": m.leaseHandle, "messageId": String(m.id), "attempt": m.attempt,
         "payload": Data(m.payload).base64EncodedString(), "leaseExpiresAt": MetadataExchange.rfc3339(ms: m.leaseUntilMs)]
    }

    private func settle(_ tenant: Tenant, _ body: [String: Any], ack: Bool,
                        respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        if let ids = body["ids"] {
            // Batch: {"ids": [...]} → {"results": [{"id", "status", ...}]} in the same order.
            guard let list = ids as? [String], !list.isEmpty, list.count <= Self.queueBatchMax else {
                return respond(.error(.badRequest("invalid ids: expected 1 ... \(Self.queueBatchMax) lease ids")))
            }
            var parsed: [(Int64, Int64)] = []
            for text in list {
                guard let p = QueueMessage.parseLeaseHandle(text) else {
                    return respond(.error(.badRequest("invalid id '\(text)': expected an id from /queue/lease")))
                }
                parsed.append(p)
            }
            let gather = Gather<(Int, [String: Any])>(count: parsed.count) { results in
                let ordered = results.sorted { $0.0 < $1.0 }.map(\.1)
                respond(Self.json(200, ["results": ordered]))
            }
            for (i, (id, seq)) in parsed.enumerated() {
                let completion: @Sendable (Result<QueueSettleResult, KVError>) -> Void = { r in
                    var o = Self.settleJSON(r)
                    o["id"] = list[i]
                    gather.add((i, o))
                }
                if ack {
                    tenant.store.ackQueueMessage(id: id, leaseSeq: seq, completion: completion)
                } else {
                    tenant.store.failQueueMessage(id: id, leaseSeq: seq, completion: completion)
                }
            }
            return
        }
        guard let text = body["id"] as? String, let (id, seq) = QueueMessage.parseLeaseHandle(text) else {
            return respond(.error(.badRequest("invalid body: expected {\"id\":\"<id from /queue/lease>\"}")))
        }
        let completion: @Sendable (Result<QueueSettleResult, KVError>) -> Void = { result in
            switch result {
            case .success(.notFound):
                respond(.text(404, "no such message: \(id) (already acknowledged, dead-lettered or never leased)"))
            case .success(.leaseLost):
                respond(.text(409, "lease \(text) was lost: it expired and the message was made ready again"))
            case .success:
                var o = Self.settleJSON(result)
                o["status"] = nil
                respond(Self.json(200, o))
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

    /// One settle outcome; "status" is what the single-id form answers with.
    static func settleJSON(_ r: Result<QueueSettleResult, KVError>) -> [String: Any] {
        switch r {
        case .success(.acknowledged):
            return ["status": 200, "result": "acknowledged"]
        case .success(.retryScheduled(let at)):
            return ["status": 200, "result": "retryScheduled", "retryAt": MetadataExchange.rfc3339(ms: at)]
        case .success(.deadLettered(let vs)):
            var o: [String: Any] = ["status": 200, "result": "deadLettered"]
            if let vs { o["versionstamp"] = Versionstamps.hex(vs) }
            return o
        case .success(.notFound):
            return ["status": 404, "result": "notFound"]
        case .success(.leaseLost):
            return ["status": 409, "result": "leaseLost"]
        case .failure(let e):
            let p = ProtocolError(e)
            return ["status": p.status, "result": "error", "reason": p.message]
        }
    }
}
