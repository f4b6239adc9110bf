// libFuzzer target: the KV key tuple codec (ExportFormat.swift).
//  - decode(encode(decode(k))) == decode(k) where k decodes;
//  - the export format claims byte-exactness for every key: parse(line(k)).key == k.
import KVEngine

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let key = Array(UnsafeBufferPointer(start: size > 0 ? data : nil, count: size))

    if let parts = KeyCodec.decode(key) {
        let encoded = KeyCodec.encode(parts)
        guard let again = KeyCodec.decode(encoded) else { fatalError("KeyCodec.encode output does not decode") }
        check(again == parts, "decode(encode(parts)) != parts")
        check(KeyCodec.encode(again) == encoded)
    }

    let entry = ExportedEntry(
        key: key, value: [1, 2, 3], encoding: Int64(ValueEncoding.bytes.rawValue),
        versionstamp: Bytes(repeating: 0, count: 9) + [1], expiresAtMs: 1)
    let line = ExportFormat.line(for: entry)
    do {
        let back = try ExportFormat.parse(line: line)
        check(back == entry, "export/import changed the key bytes: \(line)")
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
