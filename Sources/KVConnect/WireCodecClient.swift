import CDatapath
import KVEngine

/// The client side of snapshot_read, for `kvconnectd copy` reading from a
/// KV Connect server (another kvconnectd, denokv, Deno Deploy).
extension WireCodec {
    public struct ClientDecodeError: Error, CustomStringConvertible {
        public var description: String
    }

    public func encodeSnapshotRead(_ ranges: [ReadRange]) -> [UInt8] {
        let arena = Arena()
        defer { arena.free() }
        let list = arena.array(of: UnsafeMutablePointer<Com__Deno__Kv__Datapath__ReadRange>?.self, count: ranges.count)
        for (i, r) in ranges.enumerated() {
            let pb = arena.object(Com__Deno__Kv__Datapath__ReadRange.self)
            com__deno__kv__datapath__read_range__init(pb)
            pb.pointee.start = arena.binary(r.start)
            pb.pointee.end = arena.binary(r.end)
            pb.pointee.limit = Int32(clamping: r.limit)
            pb.pointee.reverse = r.reverse ? 1 : 0
            list[i] = pb
        }
        var msg = PBSnapshotRead()
        com__deno__kv__datapath__snapshot_read__init(&msg)
        msg.n_ranges = ranges.count
        msg.ranges = list
        return pack(
            &msg, com__deno__kv__datapath__snapshot_read__get_packed_size,
            com__deno__kv__datapath__snapshot_read__pack)
    }

    /// The entries of each range; throws if the server refused the read.
    public func decodeSnapshotReadOutput(_ body: [UInt8]) throws -> [[KVEntry]] {
        guard
            let msg = body.withUnsafeBufferPointer({
                com__deno__kv__datapath__snapshot_read_output__unpack(nil, $0.count, $0.baseAddress)
            })
        else {
            throw ClientDecodeError(description: "the server's answer is not a SnapshotReadOutput protobuf message")
        }
        defer { com__deno__kv__datapath__snapshot_read_output__free_unpacked(msg, nil) }
        if msg.pointee.read_disabled != 0
            || msg.pointee.status == COM__DENO__KV__DATAPATH__SNAPSHOT_READ_STATUS__SR_READ_DISABLED
        {
            throw ClientDecodeError(description: "the server has reads disabled")
        }
        func bytes(_ b: ProtobufCBinaryData) -> Bytes {
            guard b.len > 0, let p = b.data else { return [] }
            return Bytes(UnsafeBufferPointer(start: p, count: b.len))
        }
        var out: [[KVEntry]] = []
        for i in 0..<msg.pointee.n_ranges {
            let r = msg.pointee.ranges[i]!.pointee
            var entries: [KVEntry] = []
            for j in 0..<r.n_values {
                let e = r.values[j]!.pointee
                guard let enc = ValueEncoding(rawValue: Int32(bitPattern: e.encoding.rawValue)) else {
                    throw ClientDecodeError(description: "unknown value encoding \(e.encoding.rawValue)")
                }
                entries.append(
                    KVEntry(
                        key: bytes(e.key), value: KVValue(data: bytes(e.value), encoding: enc),
                        versionstamp: bytes(e.versionstamp)))
            }
            out.append(entries)
        }
        return out
    }
}
