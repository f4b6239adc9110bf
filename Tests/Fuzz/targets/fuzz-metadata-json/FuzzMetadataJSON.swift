// libFuzzer target: the metadata-exchange request body (version negotiation)
// and the JSON reply built for the negotiated version.
import Foundation
import KVConnect

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: size > 0 ? data : nil, count: size))
    let version: Int
    do {
        version = try MetadataExchange.negotiateVersion(body: body)
    } catch {
        check(error.status == 400 && !error.message.isEmpty)
        return 0
    }
    check(MetadataExchange.serverVersions.contains(version))
    // The reply is valid JSON naming that version, whatever the id text.
    let id = String(decoding: body.prefix(64), as: UTF8.self)
    let reply = MetadataExchange.responseBody(
        version: version, databaseId: id, endpointPath: "/v2",
        baseURL: "http://127.0.0.1:4512", token: "t",
        expiresAtMs: Int64(size) * 1_000_003)
    guard let obj = try? JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any] else {
        fatalError("responseBody is not a JSON object")
    }
    check(obj["version"] as? Int == version)
    check(obj["databaseId"] as? String == id)
    return 0
}

/// `precondition` that always says what failed (optimized builds drop its message).
private func check(
    _ ok: @autoclosure () -> Bool, _ what: @autoclosure () -> String = "",
    line: UInt = #line
) {
    if !ok() { fatalError("check failed at line \(line): \(what())") }
}
