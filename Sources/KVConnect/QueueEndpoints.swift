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
///
/// Same token rules as atomic_write: a read-only token gets 403.
extension KVConnectService {
    /// `endpoint`: `.queueLease`, `.queueAck` or `.queueFail`.
    func queueEndpoint(_ request: ProtocolRequest, _ endpoint: Endpoint,
                       respond: @escaping @Sendable (ProtocolResponse) -> Void) {
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
        if endpoint == .queueLease {
            lease(tenant, body, respond: respond)
        } else {
            settle(tenant, body, ack: endpoint == .queueAck, respond: respond)
        }
    }

    private static func jsonObject(_ bytes: [UInt8]) throws(ProtocolError) -> [String: Any] {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) { return [:] }
        guard let o = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw .badRequest("invalid body: expected a JSON object")
        }
        return o
    }

    private static func int(_ body: [String: Any], _ key: String) throws(ProtocolError) -> Int64? {
        guard let v = body[key] else { return nil }
        guard let n = v as? NSNumber, let i = Int64(exactly: n.doubleValue), i >= 0 else {
            throw .badRequest("invalid \(key): expected a non-negative integer of milliseconds")
        }
        return i
    }

    /// Most messages one lease or settle request may carry (`max`, `ids`).
    static let queueBatchMax = 256

    private func lease(_ tenant: Tenant, _ body: [String: Any], respond: @escaping @Sendable (ProtocolResponse) -> Void) {
        let wait: Int64, visibility: Int64, max: Int?
        do throws(ProtocolError) {
            wait = min(try Self.int(body, "waitMs") ?? 0, config.queueLongPollMaxMs)
            visibility = try Self.int(body, "visibilityTimeoutMs") ?? config.queueVisibilityTimeoutMs
            if visibility < 100 || visibility > 43_200_000 {
                throw .badRequest("invalid visibilityTimeoutMs: expected 100 ... 43200000")
            }
            max = try Self.int(body, "max").map(Int.init)
            if let max, max < 1 || max > Self.queueBatchMax {
                throw .badRequest("invalid max: expected 1 ... \(Self.queueBatchMax)")
            }
        } catch {
            return respond(.error(error))
        }
        let store = tenant.store
        store.leaseQueueMessage(visibilityMs: visibility, waitMs: wait) { result in
            switch result {
            case .success(nil):
                respond(ProtocolResponse(status: 204))
            case .success(let m?):
                guard let max else { return respond(Self.json(200, Self.leaseJSON(m))) }
                // Batch: the first message waited; the others are only what is due now.
                let more = max - 1
                if more == 0 { return respond(Self.json(200, ["messages": [Self.leaseJSON(m)]])) }
                let gather = Gather<QueueMessage>(count: more) { rest in
                    respond(Self.json(200, ["messages": ([m] + rest).map(Self.leaseJSON)]))
                }
                for _ in 0..<more {
                    store.leaseQueueMessage(visibilityMs: visibility, waitMs: 0) { r in
                        if case .success(let x?) = r { gather.add(x) } else { gather.add(nil) }
                    }
                }
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

    static func json(_ status: Int, _ o: [String: Any]) -> ProtocolResponse {
        let data = (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return ProtocolResponse(status: status, headers: [("content-type", "application/json")], body: [UInt8](data))
    }
}

/// Collects `count` asynchronous results (nil ones dropped), then calls `done` once.
final class Gather<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var left: Int
    private var items: [T] = []
    private let done: @Sendable ([T]) -> Void

    init(count: Int, done: @escaping @Sendable ([T]) -> Void) {
        left = count
        self.done = done
    }

    func add(_ item: T?) {
        lock.lock()
        if let item { items.append(item) }
        left -= 1
        let finished = left == 0
        let all = items
        lock.unlock()
        if finished { done(all) }
    }
}
