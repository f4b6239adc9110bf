// libFuzzer target: SnapshotRead request decoding + validation, and the
// response encoder fed with what the request named (see Tests/Fuzz/README.md).
import CDatapath
import KVConnect
import KVEngine

private let codec = WireCodec()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: size > 0 ? data : nil, count: size))
    let ranges: [ReadRange]
    do {
        ranges = try codec.decodeSnapshotRead(body)
    } catch {
        check(error.status == 400 && !error.message.isEmpty)
        return 0
    }
    // Whatever passes validation is within every limit.
    let l = codec.limits
    check(ranges.count <= l.maxReadRanges)
    var total = 0
    for r in ranges {
        check(r.start.count <= l.maxReadKeyBytes && r.end.count <= l.maxReadKeyBytes)
        check(r.limit > 0)
        total += r.limit
    }
    check(total <= l.maxReadEntries)

    // Answer each range with one entry built from its bounds; the output must
    // unpack again with the same content.
    let vs = Bytes(repeating: 7, count: 10)
    let results = ranges.map {
        [KVEntry(key: $0.start, value: KVValue(data: $0.end, encoding: .bytes), versionstamp: vs)]
    }
    let out = codec.encodeSnapshotReadOutput(results)
    guard
        let msg = out.withUnsafeBufferPointer({
            com__deno__kv__datapath__snapshot_read_output__unpack(nil, $0.count, $0.baseAddress)
        })
    else { fatalError("encodeSnapshotReadOutput produced an unreadable message") }
    defer { com__deno__kv__datapath__snapshot_read_output__free_unpacked(msg, nil) }
    check(msg.pointee.n_ranges == ranges.count)
    for (i, r) in ranges.enumerated() {
        let o = msg.pointee.ranges[i]!.pointee
        check(o.n_values == 1)
        let e = o.values[0]!.pointee
        check(bytes(e.key) == r.start && bytes(e.value) == r.end && bytes(e.versionstamp) == vs)
    }
    return 0
}

private func bytes(_ b: ProtobufCBinaryData) -> Bytes {
    guard b.len > 0, let p = b.data else { return [] }
    return Bytes(UnsafeBufferPointer(start: p, count: b.len))
}

/// `precondition` that always says what failed (optimized builds drop its message).
private func check(
    _ ok: @autoclosure () -> Bool, _ what: @autoclosure () -> String = "",
    line: UInt = #line
) {
    if !ok() { fatalError("check failed at line \(line): \(what())") }
}
