// What a commit tells the other daemons through NOTIFY (payloads are text,
// at most 8000 bytes): who sent it, the commit counter, the earliest expiry
// and queue deadline it set, and the keys it changed (base64), or "*" when
// they do not fit (every watcher then re-reads).

import Foundation
import KVEngine

struct PGNotification: Equatable {
    var sender: String
    var counter: UInt64
    var earliestExpiryMs: Int64?
    var earliestDueMs: Int64?
    /// nil: unknown (too many) — wake every watcher.
    var keys: [Bytes]?

    /// PostgreSQL's limit is 8000 bytes; stay below it.
    static let maxPayload = 7900

    var payload: String {
        var head =
            "\(sender);\(counter);\(earliestExpiryMs.map(String.init) ?? "");\(earliestDueMs.map(String.init) ?? "");"
        guard let keys else { return head + "*" }
        var budget = Self.maxPayload - head.utf8.count
        var parts: [String] = []
        for k in keys {
            let s = k.isEmpty ? "-" : Data(k).base64EncodedString()  // "-": the empty key
            budget -= s.utf8.count + 1
            if budget < 0 { return head + "*" }
            parts.append(s)
        }
        head += parts.joined(separator: ",")
        return head
    }

    static func parse(_ s: String) -> PGNotification? {
        let f = s.split(separator: ";", maxSplits: 4, omittingEmptySubsequences: false)
        guard f.count == 5, let counter = UInt64(f[1]) else { return nil }
        var keys: [Bytes]? = []
        if f[4] == "*" {
            keys = nil
        } else if !f[4].isEmpty {
            var out: [Bytes] = []
            for p in f[4].split(separator: ",") {
                if p == "-" {
                    out.append([])
                    continue
                }
                guard let d = Data(base64Encoded: String(p)) else { return nil }
                out.append(Bytes(d))
            }
            keys = out
        }
        return PGNotification(
            sender: String(f[0]), counter: counter, earliestExpiryMs: Int64(f[2]),
            earliestDueMs: Int64(f[3]), keys: keys)
    }
}
