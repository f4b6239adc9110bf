import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import KVConnect
import KVEngine
import Threading

/// Reads a whole database from a KV Connect server (kvconnectd, denokv,
/// Deno Deploy) for `kvconnectd copy`: the metadata exchange with the access
/// token, then paged `snapshot_read`s over the keyspace in key order. The
/// protocol hides expiry and queue messages, so those cannot be copied from
/// here; entries come with the server's versionstamps. Not Sendable: one
/// `copy` uses it from one thread (URLSession's callbacks touch only `send`'s box).
final class KVConnectReader {
    struct Failure: Error, CustomStringConvertible { var description: String }

    let url: URL
    private let accessToken: String
    private let session: URLSession
    private let codec = WireCodec()
    private var endpoint: URL?
    private var dataToken = ""
    private(set) var databaseId = ""

    /// The access token is never logged or printed.
    init(url: URL, accessToken: String) {
        self.url = url
        self.accessToken = accessToken
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = 60
        config.urlCache = nil
        config.httpCookieStorage = nil
        session = URLSession(configuration: config)
    }

    /// The URL without credentials, for messages and the progress marker.
    var displayURL: String {
        var c = URLComponents(url: url, resolvingAgainstBaseURL: false)
        c?.user = nil
        c?.password = nil
        c?.query = nil
        return c?.string ?? url.absoluteString
    }

    func connect() throws {
        var req = URLRequest(url: url)
        req.httpMethod = "POST"
        req.setValue("Bearer \(accessToken)", forHTTPHeaderField: "Authorization")
        req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        req.httpBody = Data(#"{"supportedVersions":[1,2,3]}"#.utf8)
        let (status, body) = try send(req)
        guard status == 200 else {
            throw Failure(
                description:
                    "metadata exchange with \(displayURL) answered \(status): \(String(decoding: body.prefix(300), as: UTF8.self))"
            )
        }
        struct Metadata: Decodable {
            struct Endpoint: Decodable { let url: String }
            let databaseId: String
            let token: String
            let endpoints: [Endpoint]
        }
        let meta: Metadata
        do { meta = try JSONDecoder().decode(Metadata.self, from: Data(body)) } catch {
            throw Failure(description: "metadata exchange with \(displayURL): unexpected answer (\(error))")
        }
        guard let first = meta.endpoints.first, let ep = URL(string: first.url, relativeTo: url)?.absoluteURL else {
            throw Failure(description: "metadata exchange with \(displayURL): no usable endpoint")
        }
        endpoint = ep
        dataToken = meta.token
        databaseId = meta.databaseId
    }

    /// Up to `limit` entries with keys after `after` (nil: from the first key).
    func entries(after: Bytes?, limit: Int) throws -> [KVEntry] {
        let start = after.map { $0 + [0x00] } ?? []
        let body = codec.encodeSnapshotRead([ReadRange(start: start, end: [0xff], limit: limit)])
        var lastError = ""
        for attempt in 0..<8 {
            if endpoint == nil { try connect() }
            var req = URLRequest(url: endpoint!.appendingPathComponent("snapshot_read"))
            req.httpMethod = "POST"
            req.setValue("Bearer \(dataToken)", forHTTPHeaderField: "Authorization")
            req.setValue("application/x-protobuf", forHTTPHeaderField: "Content-Type")
            req.setValue(databaseId, forHTTPHeaderField: "x-denokv-database-id")
            req.setValue("3", forHTTPHeaderField: "x-denokv-version")
            req.httpBody = Data(body)
            do {
                let (status, answer) = try send(req)
                switch status {
                case 200:
                    return try codec.decodeSnapshotReadOutput(answer).first ?? []
                case 401:  // token expired: exchange again
                    endpoint = nil
                    lastError = "401 \(String(decoding: answer.prefix(200), as: UTF8.self))"
                case 500...599:
                    lastError = "\(status) \(String(decoding: answer.prefix(200), as: UTF8.self))"
                default:
                    throw Failure(
                        description:
                            "snapshot_read on \(displayURL) answered \(status): \(String(decoding: answer.prefix(300), as: UTF8.self))"
                    )
                }
            } catch let e as URLError {
                lastError = "\(e.localizedDescription)"
            }
            usleep(UInt32(min(5, 0.2 * Double(1 << attempt)) * 1_000_000))
        }
        throw Failure(description: "snapshot_read on \(displayURL) kept failing: \(lastError)")
    }

    private struct Answer {
        var status: Int
        var body: [UInt8]
    }

    private func send(_ req: URLRequest) throws -> (Int, [UInt8]) {
        let answer = ResultBox<Result<Answer, URLError>>()
        session.dataTask(with: req) { data, response, error in
            if let error {
                answer.set(.failure((error as? URLError) ?? URLError(.unknown)))
            } else {
                answer.set(
                    .success(
                        Answer(status: (response as? HTTPURLResponse)?.statusCode ?? 0, body: [UInt8](data ?? Data()))))
            }
        }.resume()
        let a = try answer.wait().get()
        return (a.status, a.body)
    }
}
