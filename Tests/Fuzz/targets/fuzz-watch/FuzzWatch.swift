// libFuzzer target: Watch request decoding + validation, and the stream
// frame encoder fed with the watched keys.
import CDatapath
import KVConnect
import KVEngine

private let codec = WireCodec()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: size > 0 ? data : nil, count: size))
    let keys: [Bytes]
    do {
        keys = try codec.decodeWatch(body)
    } catch {
        check(error.status == 400 && !error.message.isEmpty)
        return 0
    }
    check(!keys.isEmpty && keys.count <= codec.limits.maxWatchedKeys)
    for k in keys { check(k.count <= codec.limits.maxReadKeyBytes) }

    // One frame: every other key "absent"; 4-byte LE length + WatchOutput.
    let vs = Bytes(repeating: 3, count: 10)
    let entries: [KVEntry?] = keys.enumerated().map { i, k in
        i % 2 == 0 ? KVEntry(key: k, value: KVValue(data: k, encoding: .v8), versionstamp: vs) : nil
    }
    let frame = codec.encodeWatchFrame(entries)
    check(frame.count >= 4)
    let n = Int(frame[0]) | Int(frame[1]) << 8 | Int(frame[2]) << 16 | Int(frame[3]) << 24
    check(n == frame.count - 4)
    let payload = Array(frame[4...])
    guard
        let msg = payload.withUnsafeBufferPointer({
            com__deno__kv__datapath__watch_output__unpack(nil, $0.count, $0.baseAddress)
        })
    else { fatalError("encodeWatchFrame produced an unreadable message") }
    defer { com__deno__kv__datapath__watch_output__free_unpacked(msg, nil) }
    check(msg.pointee.n_keys == keys.count)
    for (i, k) in keys.enumerated() {
        let o = msg.pointee.keys[i]!.pointee
        check(o.changed != 0)
        if i % 2 == 0 {
            let e = o.entry_if_changed!.pointee
            check(bytes(e.key) == k && bytes(e.value) == k)
        } else {
            check(o.entry_if_changed == nil)
        }
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
