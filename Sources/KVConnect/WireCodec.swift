import CDatapath
import KVEngine

typealias PBSnapshotRead = Com__Deno__Kv__Datapath__SnapshotRead
typealias PBSnapshotReadOutput = Com__Deno__Kv__Datapath__SnapshotReadOutput
typealias PBReadRangeOutput = Com__Deno__Kv__Datapath__ReadRangeOutput
typealias PBKvEntry = Com__Deno__Kv__Datapath__KvEntry
typealias PBAtomicWrite = Com__Deno__Kv__Datapath__AtomicWrite
typealias PBAtomicWriteOutput = Com__Deno__Kv__Datapath__AtomicWriteOutput
typealias PBMutation = Com__Deno__Kv__Datapath__Mutation

/// protobuf-c ⇄ engine types. Decoding validates every limit of
/// ProtocolLimits and throws a ProtocolError that names it; nothing reaches
/// the engine unless the whole request is valid.
public struct WireCodec: Sendable {
    public var limits: ProtocolLimits

    public init(limits: ProtocolLimits = ProtocolLimits()) {
        self.limits = limits
    }

    // MARK: SnapshotRead

    public func decodeSnapshotRead(_ body: [UInt8]) throws(ProtocolError) -> [ReadRange] {
        let msg = try unpack(body, "SnapshotRead", com__deno__kv__datapath__snapshot_read__unpack)
        defer { com__deno__kv__datapath__snapshot_read__free_unpacked(msg, nil) }
        let count = msg.pointee.n_ranges
        if count > limits.maxReadRanges {
            throw .badRequest(
                "too many read ranges: \(count) (limit: \(limits.maxReadRanges) ranges per snapshot_read)")
        }
        var ranges: [ReadRange] = []
        ranges.reserveCapacity(count)
        var totalLimit = 0
        for i in 0..<count {
            let r = msg.pointee.ranges[i]!.pointee
            let start = bytes(r.start), end = bytes(r.end)
            if start.count > limits.maxReadKeyBytes || end.count > limits.maxReadKeyBytes {
                throw .badRequest(
                    "read range key too large: \(max(start.count, end.count)) bytes (limit: \(limits.maxReadKeyBytes) bytes)"
                )
            }
            if r.limit <= 0 {
                throw .badRequest("invalid read range limit \(r.limit): must be greater than 0")
            }
            totalLimit += Int(r.limit)
            if totalLimit > limits.maxReadEntries {
                throw .badRequest(
                    "too many entries requested: \(totalLimit) (limit: \(limits.maxReadEntries) entries per snapshot_read)"
                )
            }
            ranges.append(ReadRange(start: start, end: end, limit: Int(r.limit), reverse: r.reverse != 0))
        }
        return ranges
    }

    public func encodeSnapshotReadOutput(_ results: [[KVEntry]], stronglyConsistent: Bool = true) -> [UInt8] {
        let arena = Arena()
        defer { arena.free() }
        let rangeOutputs = arena.array(of: UnsafeMutablePointer<PBReadRangeOutput>?.self, count: results.count)
        for (i, entries) in results.enumerated() {
            let out = arena.object(PBReadRangeOutput.self)
            com__deno__kv__datapath__read_range_output__init(out)
            let values = arena.array(of: UnsafeMutablePointer<PBKvEntry>?.self, count: entries.count)
            for (j, entry) in entries.enumerated() {
                values[j] = arena.kvEntry(entry)
            }
            out.pointee.n_values = entries.count
            out.pointee.values = entries.isEmpty ? nil : values
            rangeOutputs[i] = out
        }
        var msg = PBSnapshotReadOutput()
        com__deno__kv__datapath__snapshot_read_output__init(&msg)
        msg.n_ranges = results.count
        msg.ranges = results.isEmpty ? nil : rangeOutputs
        msg.read_is_strongly_consistent = stronglyConsistent ? 1 : 0
        msg.status = COM__DENO__KV__DATAPATH__SNAPSHOT_READ_STATUS__SR_SUCCESS
        return pack(
            &msg, com__deno__kv__datapath__snapshot_read_output__get_packed_size,
            com__deno__kv__datapath__snapshot_read_output__pack)
    }

    // MARK: AtomicWrite

    public func decodeAtomicWrite(_ body: [UInt8], nowMs: Int64) throws(ProtocolError) -> AtomicWrite {
        let msg = try unpack(body, "AtomicWrite", com__deno__kv__datapath__atomic_write__unpack)
        defer { com__deno__kv__datapath__atomic_write__free_unpacked(msg, nil) }
        let m = msg.pointee
        if m.n_checks > limits.maxChecks {
            throw .badRequest("too many checks: \(m.n_checks) (limit: \(limits.maxChecks) checks per atomic write)")
        }
        if m.n_mutations + m.n_enqueues > limits.maxMutationsAndEnqueues {
            throw .badRequest(
                "too many mutations and enqueues: \(m.n_mutations + m.n_enqueues) (limit: \(limits.maxMutationsAndEnqueues) per atomic write)"
            )
        }
        var totalBytes = 0
        var write = AtomicWrite()
        write.checks.reserveCapacity(m.n_checks)
        for i in 0..<m.n_checks {
            let c = m.checks[i]!.pointee
            let key = bytes(c.key)
            try checkWriteKey(key, what: "check key")
            let vs = bytes(c.versionstamp)
            if !vs.isEmpty && vs.count != 10 {
                throw .badRequest("invalid check versionstamp: \(vs.count) bytes (must be empty or 10 bytes)")
            }
            totalBytes += key.count
            write.checks.append(Check(key: key, versionstamp: vs.isEmpty ? nil : vs))
        }
        write.mutations.reserveCapacity(m.n_mutations)
        for i in 0..<m.n_mutations {
            let mutation = try decodeMutation(m.mutations[i]!.pointee, index: i)
            totalBytes += mutation.key.count + mutation.payloadSize
            write.mutations.append(mutation.value)
        }
        write.enqueues.reserveCapacity(m.n_enqueues)
        for i in 0..<m.n_enqueues {
            let e = m.enqueues[i]!.pointee
            let payload = bytes(e.payload)
            if payload.count > limits.maxValueBytes {
                throw .badRequest(
                    "enqueue payload too large: \(payload.count) bytes (limit: \(limits.maxValueBytes) bytes)")
            }
            // Compared as a difference only when positive: no overflow for deadlines near Int64.min.
            if e.deadline_ms > nowMs && e.deadline_ms - nowMs > limits.maxEnqueueDelayMs {
                throw .badRequest(
                    "enqueue delay too long: deadline is more than \(limits.maxEnqueueDelayMs / 86_400_000) days in the future (limit: 30 days)"
                )
            }
            if e.n_keys_if_undelivered > limits.maxKeysIfUndelivered {
                throw .badRequest(
                    "too many keys_if_undelivered: \(e.n_keys_if_undelivered) (limit: \(limits.maxKeysIfUndelivered))")
            }
            var keys: [Bytes] = []
            for k in 0..<e.n_keys_if_undelivered {
                let key = bytes(e.keys_if_undelivered[k])
                try checkWriteKey(key, what: "keys_if_undelivered key")
                totalBytes += key.count
                keys.append(key)
            }
            if e.n_backoff_schedule > limits.maxBackoffSteps {
                throw .badRequest(
                    "backoff schedule too long: \(e.n_backoff_schedule) steps (limit: \(limits.maxBackoffSteps) steps)")
            }
            var schedule: [UInt32] = []
            for k in 0..<e.n_backoff_schedule {
                let delay = e.backoff_schedule[k]
                if delay > limits.maxBackoffDelayMs {
                    throw .badRequest(
                        "backoff delay too long: \(delay) ms (limit: \(limits.maxBackoffDelayMs) ms = 1 hour per step)")
                }
                schedule.append(delay)
            }
            totalBytes += payload.count
            write.enqueues.append(
                Enqueue(
                    payload: payload, deadlineMs: e.deadline_ms,
                    keysIfUndelivered: keys, backoffSchedule: schedule))
        }
        if totalBytes > limits.maxTotalWriteBytes {
            throw .badRequest(
                "atomic write too large: \(totalBytes) bytes of keys and values (limit: \(limits.maxTotalWriteBytes) bytes)"
            )
        }
        return write
    }

    private func decodeMutation(_ m: PBMutation, index: Int) throws(ProtocolError) -> (
        value: Mutation, key: Bytes, payloadSize: Int
    ) {
        let key = bytes(m.key)
        try checkWriteKey(key, what: "mutation key")
        let expireAt: Int64? = m.expire_at_ms > 0 ? m.expire_at_ms : nil
        let type = m.mutation_type
        if type == COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_DELETE {
            return (Mutation(key: key, kind: .delete), key, 0)
        }
        // The engine's mutation for the operand, by wire type; the name is
        // only for error messages.
        let name: String, kind: (KVValue) -> MutationKind
        switch type {
        case COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_SET:
            (name, kind) = ("set", { .set($0) })
        case COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_SUM:
            let lo = bytes(m.sum_min), hi = bytes(m.sum_max), clamp = m.sum_clamp != 0
            (name, kind) = ("sum", { .sum($0, min: lo.isEmpty ? nil : lo, max: hi.isEmpty ? nil : hi, clamp: clamp) })
        case COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_MIN:
            (name, kind) = ("min", { .min($0) })
        case COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_MAX:
            (name, kind) = ("max", { .max($0) })
        case COM__DENO__KV__DATAPATH__MUTATION_TYPE__M_SET_SUFFIX_VERSIONSTAMPED_KEY:
            (name, kind) = ("setSuffixVersionstampedKey", { .setSuffixVersionstampedKey($0) })
        default:
            throw .badRequest("mutation \(index): unknown mutation type \(type.rawValue)")
        }
        guard let v = m.value?.pointee else {
            throw .badRequest("mutation \(index) ('\(name)'): missing value")
        }
        let data = bytes(v.data)
        guard let encoding = ValueEncoding(rawValue: Int32(bitPattern: v.encoding.rawValue)) else {
            throw .badRequest("mutation \(index) ('\(name)'): unknown value encoding \(v.encoding.rawValue)")
        }
        if data.count > limits.maxValueBytes {
            throw .badRequest("value too large: \(data.count) bytes (limit: \(limits.maxValueBytes) bytes)")
        }
        let mutation = Mutation(key: key, kind: kind(KVValue(data: data, encoding: encoding)), expireAtMs: expireAt)
        return (mutation, key, data.count)
    }

    private func checkWriteKey(_ key: Bytes, what: String) throws(ProtocolError) {
        if key.isEmpty {
            throw .badRequest("\(what) is empty: keys must have at least one part")
        }
        if key.count > limits.maxWriteKeyBytes {
            throw .badRequest("\(what) too large: \(key.count) bytes (limit: \(limits.maxWriteKeyBytes) bytes)")
        }
    }

    public func encodeAtomicWriteOutput(_ result: AtomicWriteResult) -> [UInt8] {
        var msg = PBAtomicWriteOutput()
        com__deno__kv__datapath__atomic_write_output__init(&msg)
        switch result {
        case .committed(let versionstamp):
            msg.status = COM__DENO__KV__DATAPATH__ATOMIC_WRITE_STATUS__AW_SUCCESS
            return versionstamp.withUnsafeBufferPointer { vs in
                msg.versionstamp = ProtobufCBinaryData(
                    len: vs.count, data: UnsafeMutablePointer(mutating: vs.baseAddress))
                return pack(
                    &msg, com__deno__kv__datapath__atomic_write_output__get_packed_size,
                    com__deno__kv__datapath__atomic_write_output__pack)
            }
        case .checkFailed(let failed):
            msg.status = COM__DENO__KV__DATAPATH__ATOMIC_WRITE_STATUS__AW_CHECK_FAILURE
            var indexes = failed.map { UInt32($0) }
            return indexes.withUnsafeMutableBufferPointer { idx in
                msg.n_failed_checks = idx.count
                msg.failed_checks = idx.baseAddress
                return pack(
                    &msg, com__deno__kv__datapath__atomic_write_output__get_packed_size,
                    com__deno__kv__datapath__atomic_write_output__pack)
            }
        }
    }

    // MARK: Watch

    public func decodeWatch(_ body: [UInt8]) throws(ProtocolError) -> [Bytes] {
        let msg = try unpack(body, "Watch", com__deno__kv__datapath__watch__unpack)
        defer { com__deno__kv__datapath__watch__free_unpacked(msg, nil) }
        let n = msg.pointee.n_keys
        if n == 0 {
            throw .badRequest("watch needs at least one key")
        }
        if n > limits.maxWatchedKeys {
            throw .badRequest("too many watched keys: \(n) (limit: \(limits.maxWatchedKeys) keys per watch)")
        }
        var keys: [Bytes] = []
        for i in 0..<n {
            let key = bytes(msg.pointee.keys[i]!.pointee.key)
            if key.count > limits.maxReadKeyBytes {
                throw .badRequest("watched key too large: \(key.count) bytes (limit: \(limits.maxReadKeyBytes) bytes)")
            }
            keys.append(key)
        }
        return keys
    }

    /// One stream frame: 4-byte little-endian length + WatchOutput, every key
    /// with changed=true and its entry (none = absent).
    public func encodeWatchFrame(_ entries: [KVEntry?]) -> [UInt8] {
        let arena = Arena()
        defer { arena.free() }
        let outs = arena.array(
            of: UnsafeMutablePointer<Com__Deno__Kv__Datapath__WatchKeyOutput>?.self, count: entries.count)
        for (i, entry) in entries.enumerated() {
            let o = arena.object(Com__Deno__Kv__Datapath__WatchKeyOutput.self)
            com__deno__kv__datapath__watch_key_output__init(o)
            o.pointee.changed = 1
            if let entry {
                o.pointee.entry_if_changed = arena.kvEntry(entry)
            }
            outs[i] = o
        }
        var msg = Com__Deno__Kv__Datapath__WatchOutput()
        com__deno__kv__datapath__watch_output__init(&msg)
        msg.status = COM__DENO__KV__DATAPATH__SNAPSHOT_READ_STATUS__SR_SUCCESS
        msg.n_keys = entries.count
        msg.keys = outs
        let payload = pack(
            &msg, com__deno__kv__datapath__watch_output__get_packed_size,
            com__deno__kv__datapath__watch_output__pack)
        let n = UInt32(payload.count)
        return [UInt8(n & 0xff), UInt8((n >> 8) & 0xff), UInt8((n >> 16) & 0xff), UInt8(n >> 24)] + payload
    }

    // MARK: helpers

    /// protobuf-c decode of a request body; the caller frees the message.
    private func unpack<M>(
        _ body: [UInt8], _ name: String,
        _ decode: (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<M>?
    )
        throws(ProtocolError) -> UnsafeMutablePointer<M>
    {
        guard let msg = body.withUnsafeBufferPointer({ decode(nil, $0.count, $0.baseAddress) }) else {
            throw .badRequest("invalid request body: not a valid \(name) protobuf message")
        }
        return msg
    }

    private func bytes(_ b: ProtobufCBinaryData) -> Bytes {
        guard b.len > 0, let p = b.data else { return [] }
        return Bytes(UnsafeBufferPointer(start: p, count: b.len))
    }
}

/// Packs a protobuf-c message into a Swift byte array in one pass.
func pack<M>(
    _ msg: UnsafePointer<M>,
    _ size: (UnsafePointer<M>?) -> Int,
    _ packer: (UnsafePointer<M>?, UnsafeMutablePointer<UInt8>?) -> Int
) -> [UInt8] {
    let n = size(msg)
    return [UInt8](unsafeUninitializedCapacity: n) { buf, count in
        count = packer(msg, buf.baseAddress)
    }
}

/// Owns the C memory of one outgoing message; freed in one go after packing.
final class Arena {
    /// A bump allocator: the structs and byte fields of one message are
    /// carved from a few chunks, not one malloc each (a 100-entry list
    /// response was ~400 mallocs in the micro-benchmarks).
    private var chunks: [UnsafeMutableRawPointer] = []
    private var cursor: UnsafeMutableRawPointer?
    private var left = 0
    private static let chunkSize = 16 * 1024

    private func allocate(_ size: Int, alignment: Int) -> UnsafeMutableRawPointer {
        let size = Swift.max(size, 1)
        if let c = cursor {
            let pad = (alignment - Int(bitPattern: c) % alignment) % alignment
            if pad + size <= left {
                cursor = c + pad + size
                left -= pad + size
                return c + pad
            }
        }
        // Chunks are 16-byte aligned, enough for every protobuf-c struct.
        let chunk = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(Self.chunkSize, size), alignment: 16)
        chunks.append(chunk)
        if size < Self.chunkSize {
            cursor = chunk + size
            left = Self.chunkSize - size
        }
        return chunk
    }

    func object<T>(_: T.Type) -> UnsafeMutablePointer<T> {
        allocate(MemoryLayout<T>.stride, alignment: MemoryLayout<T>.alignment).bindMemory(to: T.self, capacity: 1)
    }

    func array<T>(of: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let n = Swift.max(count, 1)
        return allocate(MemoryLayout<T>.stride * n, alignment: MemoryLayout<T>.alignment).bindMemory(
            to: T.self, capacity: n)
    }

    func binary(_ bytes: [UInt8]) -> ProtobufCBinaryData {
        if bytes.isEmpty { return ProtobufCBinaryData(len: 0, data: nil) }
        let p = allocate(bytes.count, alignment: 1).bindMemory(to: UInt8.self, capacity: bytes.count)
        p.initialize(from: bytes, count: bytes.count)
        return ProtobufCBinaryData(len: bytes.count, data: p)
    }

    /// A KvEntry (snapshot reads and watch frames alike) with its bytes copied in.
    func kvEntry(_ entry: KVEntry) -> UnsafeMutablePointer<PBKvEntry> {
        let e = object(PBKvEntry.self)
        com__deno__kv__datapath__kv_entry__init(e)
        e.pointee.key = binary(entry.key)
        e.pointee.value = binary(entry.value.data)
        e.pointee.encoding = Com__Deno__Kv__Datapath__ValueEncoding(UInt32(entry.value.encoding.rawValue))
        e.pointee.versionstamp = binary(entry.versionstamp)
        return e
    }

    func free() {
        for c in chunks { c.deallocate() }
        chunks.removeAll()
        cursor = nil
        left = 0
    }
}
