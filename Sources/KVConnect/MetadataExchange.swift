import Foundation

/// The control plane: `POST /` with the access token and the client's
/// supported protocol versions, answered with the database id, the data-path
/// endpoint and a short-lived data-plane token.
public struct MetadataExchange: Sendable {
    public static let serverVersions = [1, 2, 3]

    /// Highest version both sides speak. No body = a version-1 client.
    public static func negotiateVersion(body: [UInt8]) throws(ProtocolError) -> Int {
        if body.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) { return 1 }
        guard String(validating: body, as: UTF8.self) != nil else {
            throw .badRequest("invalid metadata exchange body: not valid UTF-8")
        }
        struct ClientMetadata: Decodable { let supportedVersions: [Int] }
        let versions: [Int]
        do {
            versions = try JSONDecoder().decode(ClientMetadata.self, from: Data(body)).supportedVersions
        } catch {
            throw .badRequest("invalid metadata exchange body: expected JSON like {\"supportedVersions\":[1,2,3]}")
        }
        guard let best = versions.filter({ serverVersions.contains($0) }).max() else {
            throw .badRequest(
                "no common protocol version: client supports \(versions), server supports \(serverVersions)")
        }
        return best
    }

    /// The JSON reply. Version 1 clients need an absolute endpoint URL.
    /// `eventualEndpointPath`: an endpoint listed as `eventual` (a replica).
    /// It comes first: Python's denokv sends eventual reads to the first
    /// endpoint listed and strong ones to the first strong one; Deno sends
    /// everything to the first strong one whatever the order.
    public static func responseBody(
        version: Int, databaseId: String, endpointPath: String,
        eventualEndpointPath: String? = nil,
        baseURL: String, token: String, expiresAtMs: Int64
    ) -> [UInt8] {
        let url = { (path: String) in version == 1 ? baseURL + path : path }
        var endpoints = [["url": url(endpointPath), "consistency": "strong"]]
        if let eventual = eventualEndpointPath {
            endpoints.insert(["url": url(eventual), "consistency": "eventual"], at: 0)
        }
        let object: [String: Any] = [
            "version": version,
            "databaseId": databaseId,
            "endpoints": endpoints,
            "token": token,
            "expiresAt": rfc3339(ms: expiresAtMs)
        ]
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data()
        return [UInt8](data)
    }

    static func rfc3339(ms: Int64) -> String {
        var t = time_t(ms / 1000)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
            Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
            Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int(ms % 1000))
    }
}
