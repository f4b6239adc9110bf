import Foundation
import KVEngine
import Synchronization

// What the queue's HTTP endpoints (QueueEndpoints: pull; QueueAdminEndpoints:
// administration) share: JSON bodies (as `JSONValue`) and query strings in,
// JSON answers out, storage errors as protocol errors, and one answer from
// many asynchronous storage results.
extension KVConnectService {
    /// A JSON object body; a blank body is `{}` (all fields optional).
    static func jsonBody(_ bytes: [UInt8]) throws(ProtocolError) -> JSONValue {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) { return .object([]) }
        guard let v = try? JSONValue.parse(String(decoding: bytes, as: UTF8.self)), case .object = v else {
            throw .badRequest("invalid body: expected a JSON object")
        }
        return v
    }

    /// `body[key]` as an integer in `range`, nil when absent; otherwise a 400
    /// naming the field, what it counts (`unit`) and the range.
    static func integer(
        _ body: JSONValue, _ key: String, in range: ClosedRange<Int64>,
        unit: String = ""
    ) throws(ProtocolError) -> Int64? {
        guard let v = body[key] else { return nil }
        guard case .number(let text) = v, let i = Int64(text), range.contains(i) else {
            let bound =
                range.upperBound == .max ? "\(range.lowerBound) or more" : "\(range.lowerBound) ... \(range.upperBound)"
            throw .badRequest("invalid \(key): expected an integer\(unit.isEmpty ? "" : " of \(unit)"), \(bound)")
        }
        return i
    }

    /// A JSON answer. Written by `JSONValue` (members in the order given:
    /// the answers here list them sorted), not JSONSerialization, which cost
    /// more than the claim itself on a batch lease.
    static func json(_ status: Int, _ v: JSONValue) -> ProtocolResponse {
        ProtocolResponse(
            status: status, headers: [("content-type", "application/json")], body: Array(v.serialized.utf8))
    }

    /// `a=1&b=x` → ["a": "1", "b": "x"] (percent-decoded).
    static func query(_ q: String?) -> [String: String] {
        var out: [String: String] = [:]
        for pair in (q ?? "").split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
            out[kv[0]] = kv.count > 1 ? (kv[1].removingPercentEncoding ?? kv[1]) : ""
        }
        return out
    }

    static func queryInt(_ q: [String: String], _ name: String) throws(ProtocolError) -> Int64? {
        guard let t = q[name] else { return nil }
        guard let v = Int64(t), v >= 0 else {
            throw .badRequest("invalid \(name) '\(t)': expected a non-negative integer")
        }
        return v
    }

    /// A synchronous storage call; its errors as protocol errors (5xx only
    /// where a retry can help, as `ProtocolError(KVError)` decides).
    static func storageCall<T>(_ body: () throws -> T) throws(ProtocolError) -> T {
        do { return try body() } catch let e as KVError { throw ProtocolError(e) } catch {
            throw ProtocolError(status: 500, "internal error: \(error)", retryAfterSeconds: 1)
        }
    }
}

/// Collects `count` asynchronous results (nil ones dropped), then calls `done` once.
final class Gather<T: Sendable>: Sendable {
    private struct State {
        var left: Int
        var items: [T] = []
    }

    private let state: Mutex<State>
    private let done: @Sendable ([T]) -> Void

    init(count: Int, done: @escaping @Sendable ([T]) -> Void) {
        state = Mutex(State(left: count))
        self.done = done
    }

    func add(_ item: T?) {
        let all: [T]? = state.withLock { s in
            if let item { s.items.append(item) }
            s.left -= 1
            return s.left == 0 ? s.items : nil
        }
        if let all { done(all) }
    }
}

extension JSONValue {
    static func int<I: BinaryInteger>(_ n: I) -> JSONValue { .number(String(n)) }
}
