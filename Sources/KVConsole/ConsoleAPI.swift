// The console's data, queue and server endpoints for one database. Reads
// are snapshot reads; every change is one atomic write with a versionstamp
// check, so a concurrent change is reported (409 with the new value)
// instead of overwritten.

import Foundation
import KVConnect
import KVEngine

struct ConsoleAPI {
    let service: ConsoleService
    let store: any KVStorage
    let tenant: Tenant

    static let listLimit = 50, maxListLimit = 500
    /// Longest value text in a listing (the entry view shows it whole).
    static let listTextChars = 300
    static let entryTextChars = 200_000
    static let deleteBatch = 500

    typealias Respond = @Sendable (ProtocolResponse) -> Void

    // MARK: reads

    func list(_ r: ConsoleRequest) -> ProtocolResponse {
        guard let prefix = KeyPresentation.bytes(fromId: r.param("prefix") ?? "") else {
            return .text(400, "bad prefix")
        }
        var start = prefix
        if let c = r.param("cursor"), !c.isEmpty {
            guard let cursor = KeyPresentation.bytes(fromId: c), cursor.starts(with: prefix) else {
                return .text(400, "bad cursor")
            }
            start = cursor + [0x00]
        }
        let limit = min(max(Int(r.param("limit") ?? "") ?? Self.listLimit, 1), Self.maxListLimit)
        let entries: [KVEntry]
        do {
            entries = try store.snapshotRead([ReadRange(start: start, end: prefix + [0xFF], limit: limit + 1)])[0]
        } catch {
            return failure(error)
        }
        let page = entries.prefix(limit)
        return service.json(
            .object([
                ("database", .string(tenant.name)),
                ("prefix", KeyPresentation.json(prefix)),
                ("entries", .array(page.map { summary($0) })),
                ("cursor", entries.count > limit ? .string(KeyPresentation.id(page.last!.key)) : .null)
            ]))
    }

    func entry(_ r: ConsoleRequest) -> ProtocolResponse {
        guard let key = KeyPresentation.bytes(fromId: r.param("key") ?? ""), !key.isEmpty else {
            return .text(400, "missing or bad key")
        }
        do {
            let e = try store.readKeys([key])[0]
            return service.json(.object([("key", KeyPresentation.json(key)), ("entry", e.map(Self.detail) ?? .null)]))
        } catch {
            return failure(error)
        }
    }

    func count(_ r: ConsoleRequest) -> ProtocolResponse {
        guard let prefix = KeyPresentation.bytes(fromId: r.param("prefix") ?? "") else {
            return .text(400, "bad prefix")
        }
        do {
            let keys = try keys(under: prefix, atMost: service.config.maxPrefixDelete + 1)
            return service.json(
                .object([
                    ("count", .number(String(keys.count))),
                    ("tooMany", .bool(keys.count > service.config.maxPrefixDelete))
                ]))
        } catch {
            return failure(error)
        }
    }

    func events(_ r: ConsoleRequest, authorized: @escaping @Sendable () -> Bool) -> ProtocolResponse {
        let range: ReadRange
        if let k = r.param("key"), !k.isEmpty {
            guard let key = KeyPresentation.bytes(fromId: k) else { return .text(400, "bad key") }
            range = ReadRange(start: key, end: key + [0x00], limit: 1)
        } else {
            guard let prefix = KeyPresentation.bytes(fromId: r.param("prefix") ?? "") else {
                return .text(400, "bad prefix")
            }
            range = ReadRange(start: prefix, end: prefix + [0xFF], limit: LiveFeed.pageSize)
        }
        var resp = ProtocolResponse(
            status: 200,
            headers: [
                ("content-type", "text/event-stream; charset=utf-8"),
                ("x-accel-buffering", "no")
            ])
        let store = self.store
        resp.stream = { stream in LiveFeed(store: store, range: range, stream: stream, authorized: authorized).start() }
        return resp
    }

    func queue() -> ProtocolResponse {
        do {
            let c = try store.queueCounts()
            let s = store.queueStats
            return service.json(
                .object([
                    ("database", .string(tenant.name)),
                    ("ready", .number(String(c.ready))), ("inflight", .number(String(c.inflight))),
                    ("acknowledged", .number(String(s.acknowledged))),
                    ("failedAttempts", .number(String(s.failedAttempts))),
                    ("deadLettered", .number(String(s.deadLettered))),
                    ("leasesExpired", .number(String(s.leasesExpired))),
                    ("recoveredOnOpen", .number(String(store.queueRecoveredOnOpen)))
                ]))
        } catch {
            return failure(error)
        }
    }

    func server() -> ProtocolResponse {
        let stats = service.storageStats(tenant)
        var members: [(String, JSONValue)] = [
            ("version", .string(service.config.serverVersion)),
            ("uptimeSeconds", .number(String(Int(Date().timeIntervalSince1970 - service.startedAt)))),
            (
                "database",
                .object([
                    ("name", .string(tenant.name)), ("id", .string(tenant.databaseId)),
                    ("location", .string(store.location)),
                    ("sizeBytes", stats.map { .number(String($0.sizeBytes)) } ?? .null),
                    ("entries", stats.map { .number(String($0.entries)) } ?? .null),
                    ("watches", .number(String(store.watchCount))),
                    ("versionstamp", .string(Self.hex(store.currentVersionstamp)))
                ])
            )
        ]
        if let h = service.history {
            let c = h.current
            func n(_ d: Double?) -> JSONValue {
                d.map { .number(InspectFormatter.jsNumber(($0 * 1000).rounded() / 1000)) } ?? .null
            }
            members += [
                ("openConnections", .number(String(c.openConnections))),
                ("openStreams", .number(String(c.openStreams))),
                ("requestsTotal", n(c.requests)), ("writesTotal", n(c.writes)),
                (
                    "samples",
                    .array(
                        h.samples.map { s in
                            .object([
                                ("t", n(s.time)), ("rps", n(s.requestsPerSecond)), ("reqMs", n(s.requestLatencyMs)),
                                ("wps", n(s.writesPerSecond)), ("commitMs", n(s.commitLatencyMs))
                            ])
                        })
                )
            ]
        }
        return service.json(.object(members))
    }

    // MARK: changes

    func set(_ body: JSONValue, _ respond: @escaping Respond) {
        let key: Bytes
        if let id = body["key"].flatMap(ConsoleService.string) {
            guard let k = KeyPresentation.bytes(fromId: id) else { return respond(.text(400, "bad key")) }
            key = k
        } else if let text = body["keyJson"].flatMap(ConsoleService.string) {
            do { key = try KeyPresentation.parse(text) } catch { return respond(.text(400, error.description)) }
        } else {
            return respond(.text(400, "send \"key\" (an existing key's id) or \"keyJson\" (a JSON array)"))
        }
        guard !key.isEmpty, key.count <= service.config.limits.maxWriteKeyBytes else {
            return respond(.text(400, "key must be 1 to \(service.config.limits.maxWriteKeyBytes) bytes"))
        }
        guard let type = body["type"].flatMap(ConsoleService.string),
            let text = body["value"].flatMap(ConsoleService.string)
        else {
            return respond(.text(400, "send \"type\" and \"value\" (as text)"))
        }
        let value: KVValue
        do { value = try ValuePresentation.value(type: type, text: text) } catch {
            return respond(.text(400, error.description))
        }
        guard value.data.count <= service.config.limits.maxValueBytes else {
            return respond(
                .text(413, "value is \(value.data.count) bytes; at most \(service.config.limits.maxValueBytes)"))
        }
        guard let check = check(key, body, respond) else { return }
        commit(AtomicWrite(checks: [check], mutations: [Mutation(key: key, kind: .set(value))]), key: key, respond)
    }

    func delete(_ body: JSONValue, _ respond: @escaping Respond) {
        guard let key = body["key"].flatMap(ConsoleService.string).flatMap(KeyPresentation.bytes(fromId:)), !key.isEmpty
        else {
            return respond(.text(400, "send \"key\" (the key's id)"))
        }
        guard let check = check(key, body, respond) else { return }
        commit(AtomicWrite(checks: [check], mutations: [Mutation(key: key, kind: .delete)]), key: key, respond)
    }

    /// Deletes every key under the prefix, if their number is still the one
    /// the user confirmed. Batches of `deleteBatch` deletes, one after another.
    func deletePrefix(_ body: JSONValue, _ respond: @escaping Respond) {
        guard let prefix = body["prefix"].flatMap(ConsoleService.string).flatMap(KeyPresentation.bytes(fromId:)) else {
            return respond(.text(400, "send \"prefix\" (a prefix id; empty for the whole database)"))
        }
        guard case .number(let n)? = body["count"], let expected = Int(n) else {
            return respond(.text(400, "send \"count\": the number of keys you confirmed"))
        }
        let keys: [Bytes]
        do { keys = try self.keys(under: prefix, atMost: service.config.maxPrefixDelete + 1) } catch {
            return respond(failure(error))
        }
        if keys.count > service.config.maxPrefixDelete {
            return respond(
                .text(
                    400, "more than \(service.config.maxPrefixDelete) keys under this prefix: delete narrower prefixes")
            )
        }
        if keys.count != expected {
            return respond(
                service.json(
                    .object([
                        ("conflict", .bool(true)), ("count", .number(String(keys.count))),
                        ("message", .string("the prefix now holds \(keys.count) keys, not \(expected): confirm again"))
                    ]), status: 409))
        }
        let store = self.store, service = self.service
        let batches = stride(from: 0, to: keys.count, by: Self.deleteBatch).map {
            Array(keys[$0..<min($0 + Self.deleteBatch, keys.count)])
        }
        @Sendable func run(_ i: Int, _ deleted: Int) {
            guard i < batches.count else {
                return respond(service.json(.object([("deleted", .number(String(deleted)))])))
            }
            store.atomicWrite(AtomicWrite(mutations: batches[i].map { Mutation(key: $0, kind: .delete) })) { result in
                switch result {
                case .success: run(i + 1, deleted + batches[i].count)
                case .failure(let e):
                    var r = ProtocolResponse.error(ProtocolError(e))
                    r.body = Array(
                        "deleted \(deleted) of \(keys.count) keys, then: \(String(decoding: r.body, as: UTF8.self))"
                            .utf8)
                    respond(r)
                }
            }
        }
        run(0, 0)
    }

    /// The versionstamp check every change carries: `"expect": null` (the
    /// key must not exist) or the hex versionstamp the page showed.
    private func check(_ key: Bytes, _ body: JSONValue, _ respond: Respond) -> Check? {
        switch body["expect"] {
        case .null?: return Check(key: key, versionstamp: nil)
        case .string(let hex)?:
            guard let v = KeyPresentation.hexBytes(hex), v.count == 10 else {
                respond(.text(400, "\"expect\" must be a 20-hex-digit versionstamp or null"))
                return nil
            }
            return Check(key: key, versionstamp: v)
        default:
            respond(.text(400, "send \"expect\": the versionstamp you edited (null for a new key)"))
            return nil
        }
    }

    private func commit(_ write: AtomicWrite, key: Bytes, _ respond: @escaping Respond) {
        let store = self.store, service = self.service
        store.atomicWrite(write) { result in
            switch result {
            case .success(.committed(let v)):
                respond(
                    service.json(
                        .object([("versionstamp", .string(Self.hex(v))), ("key", .string(KeyPresentation.id(key)))])))
            case .success(.checkFailed):
                let current = (try? store.readKeys([key])[0]) ?? nil
                respond(
                    service.json(
                        .object([
                            ("conflict", .bool(true)),
                            (
                                "message",
                                .string(
                                    current == nil ? "the key was deleted meanwhile" : "the key was changed meanwhile")
                            ),
                            ("entry", current.map { ConsoleAPI.detail($0) } ?? .null)
                        ]), status: 409))
            case .failure(let e):
                respond(.error(ProtocolError(e)))
            }
        }
    }

    // MARK: helpers

    private func keys(under prefix: Bytes, atMost cap: Int) throws -> [Bytes] {
        var out: [Bytes] = []
        var start = prefix
        while out.count < cap {
            let want = min(1000, cap - out.count)
            let page = try store.snapshotRead([ReadRange(start: start, end: prefix + [0xFF], limit: want)])[0]
            out += page.map(\.key)
            guard page.count == want, let last = page.last else { break }
            start = last.key + [0x00]
        }
        return out
    }

    private func summary(_ e: KVEntry) -> JSONValue {
        var text = InspectFormatter.inspect(e.value)
        if text.count > Self.listTextChars { text = String(text.prefix(Self.listTextChars)) + "…" }
        return .object([
            ("key", KeyPresentation.json(e.key)), ("type", .string(ValuePresentation.typeName(e.value))),
            ("text", .string(text)), ("versionstamp", .string(Self.hex(e.versionstamp))),
            ("size", .number(String(e.value.data.count)))
        ])
    }

    static func detail(_ e: KVEntry) -> JSONValue {
        var text = InspectFormatter.inspect(e.value)
        if text.count > entryTextChars { text = String(text.prefix(entryTextChars)) + "…" }
        let editor = ValuePresentation.editor(e.value)
        let encoding: String
        switch e.value.encoding {
        case .v8: encoding = "v8"
        case .le64: encoding = "le64"
        case .bytes: encoding = "bytes"
        }
        return .object([
            ("key", KeyPresentation.json(e.key)), ("type", .string(ValuePresentation.typeName(e.value))),
            ("text", .string(text)), ("versionstamp", .string(hex(e.versionstamp))),
            ("size", .number(String(e.value.data.count))),
            ("editor", editor.map { .object([("type", .string($0.0)), ("value", .string($0.1))]) } ?? .null),
            ("raw", .object([("encoding", .string(encoding)), ("hex", .string(hex(e.value.data)))]))
        ])
    }

    static func hex(_ b: Bytes) -> String { b.map { String(format: "%02x", $0) }.joined() }

    private func failure(_ error: Error) -> ProtocolResponse {
        if let e = error as? KVError { return .error(ProtocolError(e)) }
        return .error(ProtocolError(status: 500, "internal error: \(error)", retryAfterSeconds: 1))
    }
}
