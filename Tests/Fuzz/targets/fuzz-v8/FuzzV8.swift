// libFuzzer target: the V8 ValueSerializer decoders.
//  - V8Codec.decodeScalar (sum operands and bounds): encode → decode is the identity.
//  - V8Value.decode: whatever decodes and re-encodes decodes to the same value;
//    where the bytes are byte-exact (decodeExactly), encode(decode(x)) == x.
//  - The export format claims byte-exactness for every value: parse(line(x)) == x.
import KVEngine

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: size > 0 ? data : nil, count: size))

    if let s = V8Codec.decodeScalar(bytes) {
        let again = V8Codec.decodeScalar(V8Codec.encode(s))
        switch (s, again) {
        case let (.number(a), .number(b)?): check(a.bitPattern == b.bitPattern)
        case let (.bigint(a), .bigint(b)?): check(a == b)
        default: fatalError("V8Codec.encode(\(s)) does not decode back")
        }
    }

    if let (version, value) = V8Value.decode(bytes) {
        if let encoded = try? value.encode(version: version) {
            guard let (v2, value2) = V8Value.decode(encoded) else {
                fatalError("V8Value.encode output does not decode: \(encoded)")
            }
            check(v2 == version && value2 == value, "decode(encode(v)) != v")
        }
        if let exact = V8Value.decodeExactly(bytes) {
            check(exact == value)
            check((try? exact.encode(version: version)) == bytes)
        }
    }

    // Export/import of a row holding these bytes as a V8 value reproduces them.
    let entry = ExportedEntry(
        key: [0x02, 0x66, 0x00], value: bytes, encoding: Int64(ValueEncoding.v8.rawValue),
        versionstamp: Bytes(repeating: 0, count: 9) + [1], expiresAtMs: nil)
    let line = ExportFormat.line(for: entry)
    do {
        let back = try ExportFormat.parse(line: line)
        check(back == entry, "export/import changed the value bytes: \(line)")
    } catch {
        fatalError("export line does not import: \(error) in \(line)")
    }
    return 0
}

/// `precondition` that always says what failed (optimized builds drop its message).
private func check(
    _ ok: @autoclosure () -> Bool, _ what: @autoclosure () -> String = "",
    line: UInt = #line
) {
    if !ok() { fatalError("check failed at line \(line): \(what())") }
}
