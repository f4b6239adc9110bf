// kvconnectd queue stats|list|peek|delete|purge|redrive: a client of the
// running daemon's /admin/queue endpoints (KVConnect/QueueAdminEndpoints),
// authenticated with the database's access token, so it works while the
// daemon serves the database and whatever the backend. Prints the server's
// JSON; errors: one line on stderr, exit code 2.

import ArgumentParser
import CCurl
import Foundation

struct QueueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "See and steer a running daemon's queue (one database, chosen by the access token).",
        discussion: """
            The access token is read from --access-token-file, KVCONNECTD_ACCESS_TOKEN or
            DENO_KV_ACCESS_TOKEN. Output is JSON (docs/queues.md, Administration).
            """,
        subcommands: [Stats.self, List.self, Peek.self, Delete.self, Purge.self, Redrive.self])

    struct Target: ParsableArguments {
        @Option(help: "The daemon's URL (default: KVCONNECTD_URL or http://127.0.0.1:4512).")
        var url: String?
        @Option(help: "File holding the database's access token.")
        var accessTokenFile: String?

        func call(_ method: String, _ path: String, body: String? = nil) throws -> String {
            let env = ProcessInfo.processInfo.environment
            let base = (url ?? env["KVCONNECTD_URL"] ?? "http://127.0.0.1:4512").trimmingSuffix("/")
            let token: String
            if let f = accessTokenFile {
                guard let t = try? String(contentsOfFile: f, encoding: .utf8) else {
                    throw QueueCommand.fail("cannot read \(f)")
                }
                token = t.trimmingCharacters(in: .whitespacesAndNewlines)
            } else if let t = env["KVCONNECTD_ACCESS_TOKEN"] ?? env["DENO_KV_ACCESS_TOKEN"] {
                token = t
            } else {
                throw QueueCommand.fail(
                    "no access token: use --access-token-file, KVCONNECTD_ACCESS_TOKEN or DENO_KV_ACCESS_TOKEN")
            }
            let (status, text) = try HTTPOnce.request(method, base + "/admin/queue" + path, token: token, body: body)
            guard (200..<300).contains(status) else {
                throw QueueCommand.fail("\(status): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            return text
        }
    }

    static func fail(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("kvconnectd queue: \(message)\n".utf8))
        return ExitCode(2)
    }

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Messages by state: ready, delayed, in flight; the oldest due time.")
        @OptionGroup var target: Target
        func run() throws { print(try target.call("GET", "/stats")) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Messages in id order, with decoded payload, attempt and due time.")
        @OptionGroup var target: Target
        @Option(help: "Only messages with a greater id (the \"next\" of the previous page).")
        var after: Int64 = 0
        @Option(help: "At most this many (1 ... 1000).")
        var limit: Int = 100
        func run() throws { print(try target.call("GET", "/messages?after=\(after)&limit=\(limit)")) }
    }

    struct Peek: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One message by id.")
        @OptionGroup var target: Target
        @Argument(help: "The message id.") var id: Int64
        func run() throws { print(try target.call("GET", "/messages/\(id)")) }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete one message (not dead-lettered).")
        @OptionGroup var target: Target
        @Argument(help: "The message id.") var id: Int64
        func run() throws { print(try target.call("DELETE", "/messages/\(id)")) }
    }

    struct Purge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete every message of the queue (nothing is dead-lettered).")
        @OptionGroup var target: Target
        @Flag(help: "Required: confirms the purge.") var yes = false
        func run() throws {
            guard yes else { throw QueueCommand.fail("purge deletes every queued message: add --yes") }
            print(try target.call("POST", "/purge", body: "{}"))
        }
    }

    struct Redrive: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put dead letters back into the queue.",
            discussion: """
                Each value at --key (or under --prefix) is deleted and enqueued again in one atomic
                write, due now, with Deno's default backoff and the same key as dead-letter key.
                Keys are JSON in the export format, e.g. '["dlq", "orders"]' or '["n", {"bigint":"7"}]'.
                """)
        @OptionGroup var target: Target
        @Option(help: "One dead-letter key (JSON array).") var key: String?
        @Option(help: "Every dead letter under this key prefix (JSON array).") var prefix: String?
        @Option(help: "At most this many (1 ... 1000).") var limit: Int = 1000
        func run() throws {
            guard (key == nil) != (prefix == nil) else {
                throw QueueCommand.fail("give exactly one of --key and --prefix")
            }
            let body =
                key.map { "{\"key\": \($0), \"limit\": \(limit)}" } ?? "{\"prefix\": \(prefix!), \"limit\": \(limit)}"
            print(try target.call("POST", "/redrive", body: body))
        }
    }
}

/// One blocking HTTP request with libcurl's easy interface (CLI only).
enum HTTPOnce {
    static func request(_ method: String, _ url: String, token: String, body: String?) throws -> (Int, String) {
        guard let h = curl_easy_init() else { throw QueueCommand.fail("libcurl init failed") }
        defer { curl_easy_cleanup(h) }
        var headers: UnsafeMutablePointer<curl_slist>? = curl_slist_append(nil, "Authorization: Bearer \(token)")
        headers = curl_slist_append(headers, "Content-Type: application/json")
        defer { curl_slist_free_all(headers) }
        var buffer = kv_curl_buffer(data: nil, len: 0)
        defer { free(buffer.data) }
        _ = kv_curl_easy_setopt_ptr(h, CURLOPT_URL, url)
        _ = kv_curl_easy_setopt_ptr(h, CURLOPT_CUSTOMREQUEST, method)
        _ = kv_curl_easy_setopt_ptr(h, CURLOPT_HTTPHEADER, headers)
        _ = kv_curl_easy_setopt_long(h, CURLOPT_TIMEOUT_MS, 60_000)
        _ = kv_curl_easy_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        if let body {
            _ = kv_curl_easy_setopt_ptr(h, CURLOPT_COPYPOSTFIELDS, body)
        }
        _ = kv_curl_collect_body(h, &buffer)
        let rc = curl_easy_perform(h)
        guard rc == CURLE_OK else {
            throw QueueCommand.fail("\(url): \(String(cString: curl_easy_strerror(rc)))")
        }
        let text =
            buffer.data.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: buffer.len), as: UTF8.self) }
            ?? ""
        return (Int(kv_curl_response_code(h)), text)
    }
}

private extension String {
    func trimmingSuffix(_ s: String) -> String { hasSuffix(s) ? String(dropLast(s.count)) : self }
}
