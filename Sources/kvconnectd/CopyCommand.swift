// `kvconnectd copy SOURCE DEST`: a whole database from a SQLite file, a
// PostgreSQL URI or a KV Connect URL into a SQLite file or PostgreSQL URI.

import ArgumentParser
import Crypto
import Foundation
import KVEngine

struct Copy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a whole database: SQLite, PostgreSQL, or (as source) a KV Connect server.",
        discussion: """
            SOURCE: a SQLite file, a postgres:// URI, or an http(s):// KV Connect URL (the URL
            given to Deno.openKv; its access token from --source-token-file or DENO_KV_ACCESS_TOKEN).
            DEST: a SQLite file (created if missing) or a postgres:// URI; it must be empty or hold
            an interrupted copy of the same source, and no daemon may serve it meanwhile.

            Keys and values are copied byte for byte in key order, with their versionstamps;
            the destination's commit counter is raised so new versionstamps sort after them.
            Between SQLite and PostgreSQL expiry and queue messages are kept too. A KV Connect
            server does not expose expiry or queue messages: entries come without expiry and
            messages are not copied. Entries already expired are skipped.

            Each page is written in one transaction together with the copy's progress, so an
            interrupted copy continues where it stopped when run again. At the end both sides
            are read again and their entry counts and SHA-256 checksums (over key, value,
            encoding, versionstamp and expiry, in key order) must match; stop writers to the
            source first, or the checksums will differ. PostgreSQL passwords come from
            PGPASSWORD, PGPASSFILE or ~/.pgpass, never from the command line.
            """)

    @Argument(help: "SQLite file, postgres:// URI or http(s):// KV Connect URL.")
    var source: String
    @Argument(help: "SQLite file or postgres:// URI.")
    var dest: String
    @Option(help: "File holding the access token of a KV Connect source (else DENO_KV_ACCESS_TOKEN).")
    var sourceTokenFile: String?
    @Option(help: "Entries per transaction (default 1000).")
    var pageSize = 1000

    func run() throws {
        do {
            try CopyRun(source: source, dest: dest, tokenFile: sourceTokenFile, pageSize: pageSize).run()
        } catch let e as ExitCode {
            throw e
        } catch {
            FileHandle.standardError.write(Data("kvconnectd copy: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// Where a copy reads from.
private protocol CopySource {
    var name: String { get }
    /// Progress marker name in the destination (per source database).
    var identity: String { get }
    var keepsExpiryAndQueue: Bool { get }
    func entries(after: Bytes?, limit: Int) throws -> [StoredEntry]
    func messages(after: Int64?, limit: Int) throws -> [StoredQueueMessage]
}

private struct StorageSource: CopySource {
    let store: any KVStorage
    var name: String { store.location }
    var identity: String { "db:" + store.databaseId }
    var keepsExpiryAndQueue: Bool { true }
    func entries(after: Bytes?, limit: Int) throws -> [StoredEntry] {
        try store.scanEntries(after: after, limit: limit)
    }
    func messages(after: Int64?, limit: Int) throws -> [StoredQueueMessage] {
        try store.scanQueueMessages(after: after, limit: limit)
    }
}

private struct RemoteSource: CopySource {
    let reader: KVConnectReader
    var name: String { reader.displayURL }
    var identity: String { "kvconnect:" + reader.databaseId }
    var keepsExpiryAndQueue: Bool { false }
    func entries(after: Bytes?, limit: Int) throws -> [StoredEntry] {
        try reader.entries(after: after, limit: min(limit, 1000)).map {
            StoredEntry(key: $0.key, value: $0.value, versionstamp: $0.versionstamp, expiresAtMs: nil)
        }
    }
    func messages(after: Int64?, limit: Int) throws -> [StoredQueueMessage] { [] }
}

/// The copy's position, stored in the destination with every page.
enum CopyPosition: Equatable {
    case entries(after: Bytes)
    case messages(after: Int64)
    case done

    var encoded: Bytes {
        switch self {
        case .entries(let key): Array("e".utf8) + key
        case .messages(let id): Array("m".utf8) + withUnsafeBytes(of: id.bigEndian, Array.init)
        case .done: Array("d".utf8)
        }
    }

    init?(_ b: Bytes) {
        guard let tag = b.first else { return nil }
        switch tag {
        case UInt8(ascii: "e"): self = .entries(after: Array(b.dropFirst()))
        case UInt8(ascii: "m") where b.count == 9:
            self = .messages(after: Int64(bigEndian: b.dropFirst().reduce(0) { $0 << 8 | Int64($1) }))
        case UInt8(ascii: "d"): self = .done
        default: return nil
        }
    }
}

/// SHA-256 over the live entries in key order, and their count.
struct CopyChecksum {
    private var hasher = SHA256()
    private(set) var count = 0

    mutating func add(_ e: StoredEntry) {
        func field(_ b: Bytes) {
            withUnsafeBytes(of: UInt32(b.count).bigEndian) { hasher.update(bufferPointer: $0) }
            hasher.update(data: b)
        }
        field(e.key)
        field(e.value.data)
        withUnsafeBytes(of: e.value.encoding.rawValue.bigEndian) { hasher.update(bufferPointer: $0) }
        field(e.versionstamp)
        withUnsafeBytes(of: (e.expiresAtMs ?? -1).bigEndian) { hasher.update(bufferPointer: $0) }
        count += 1
    }

    func finalize() -> String { hasher.finalize().map { String(format: "%02x", $0) }.joined() }
}

private struct CopyRun {
    let source: String, dest: String, tokenFile: String?, pageSize: Int
    let progress = CopyProgressLine()

    func run() throws {
        guard pageSize >= 1 else { throw Settings.Invalid(description: "--page-size must be at least 1") }
        let src: CopySource
        var opened: [any KVStorage] = []
        defer { for s in opened { s.close() } }
        let lower = source.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            guard let url = URL(string: source) else { throw Settings.Invalid(description: "invalid source URL") }
            let reader = KVConnectReader(url: url, accessToken: try sourceToken())
            try reader.connect()
            src = RemoteSource(reader: reader)
        } else {
            let location = try CopyRun.location(source, what: "source")
            if case .sqlite(let path) = location, !FileManager.default.fileExists(atPath: path) {
                throw Settings.Invalid(description: "source \(path) does not exist")
            }
            let store = try StorageFactory.open(location, passwordFile: nil)
            opened.append(store)
            src = StorageSource(store: store)
        }
        let destLocation = try CopyRun.location(dest, what: "destination")
        if case .sqlite(let path) = destLocation, StorageFactory.sqliteInUse(path) {
            throw Settings.Invalid(
                description: "destination \(path) is open in another process: stop the daemon serving it first")
        }
        let dst = try StorageFactory.open(destLocation, passwordFile: nil)
        opened.append(dst)
        if let s = src as? StorageSource, s.store.databaseId == dst.databaseId {
            throw Settings.Invalid(description: "source and destination are the same database (\(dst.databaseId))")
        }

        var position = try dst.copyProgress(name: src.identity).flatMap(CopyPosition.init)
        if position == nil {
            guard try dst.scanEntries(after: nil, limit: 1).isEmpty,
                try dst.scanQueueMessages(after: nil, limit: 1).isEmpty
            else {
                throw Settings.Invalid(
                    description:
                        "destination \(dst.location) is not empty (and holds no interrupted copy of this source)")
            }
            position = .entries(after: [])
        } else if position != .done {
            progress.note("continuing an interrupted copy from \(src.name)")
        }
        let startMs = Int64(Date().timeIntervalSince1970 * 1000)
        var copied = 0, messages = 0
        var last: Bytes? = nil
        if case .entries(let after) = position! { last = after.isEmpty ? nil : after }
        // Entries, in key order; the page and the new position in one transaction.
        if case .entries = position! {
            while true {
                let page = try src.entries(after: last, limit: pageSize)
                guard let lastKey = page.last?.key else { break }
                let live = page.filter { ($0.expiresAtMs ?? .max) > startMs }
                last = lastKey
                try dst.importBulk(
                    BulkImport(
                        entries: live, messages: [], progressName: src.identity,
                        progress: CopyPosition.entries(after: lastKey).encoded))
                copied += live.count
                progress.show("copy: \(copied) entries")
            }
            position = src.keepsExpiryAndQueue ? .messages(after: 0) : .done
            try dst.importBulk(
                BulkImport(entries: [], messages: [], progressName: src.identity, progress: position!.encoded))
        }
        // Queue messages (local sources), in id order.
        if case .messages(var after) = position! {
            while true {
                let page = try src.messages(after: after, limit: pageSize)
                guard let lastId = page.last?.id else { break }
                after = lastId
                try dst.importBulk(
                    BulkImport(
                        entries: [], messages: page, progressName: src.identity,
                        progress: CopyPosition.messages(after: lastId).encoded))
                messages += page.count
                progress.show("copy: \(copied) entries, \(messages) queue messages")
            }
            try dst.importBulk(
                BulkImport(entries: [], messages: [], progressName: src.identity, progress: CopyPosition.done.encoded))
        }
        progress.finish()

        // Verify: both sides again, same cut-off for entries about to expire
        // (a sweeper may remove them meanwhile on either side).
        let cutoff = Int64(Date().timeIntervalSince1970 * 1000) + 60_000
        let a = try checksum({ try src.entries(after: $0, limit: pageSize) }, cutoff: cutoff)
        let b = try checksum({ try dst.scanEntries(after: $0, limit: pageSize) }, cutoff: cutoff)
        guard a.count == b.count, a.finalize() == b.finalize() else {
            throw Settings.Invalid(
                description:
                    "verification failed: source has \(a.count) live entries (sha256 \(a.finalize())), destination \(b.count) (sha256 \(b.finalize())); was the source written during the copy? Copy into an empty destination again."
            )
        }
        var queueNote = "queue messages not readable over KV Connect (not copied)"
        if src.keepsExpiryAndQueue {
            let srcCount = try countMessages { try src.messages(after: $0, limit: pageSize) }
            let dstCount = try countMessages { try dst.scanQueueMessages(after: $0, limit: pageSize) }
            guard srcCount == dstCount else {
                throw Settings.Invalid(
                    description: "verification failed: source has \(srcCount) queue messages, destination \(dstCount)")
            }
            queueNote = "\(dstCount) queue messages"
        }
        let expiryNote =
            src.keepsExpiryAndQueue ? "expiry kept" : "expiry not readable over KV Connect (entries copied without it)"
        print(
            "copy: \(src.name) -> \(dst.location): \(b.count) entries (sha256 \(b.finalize())), \(queueNote); versionstamps kept, \(expiryNote); verified"
        )
    }

    private func checksum(_ page: (Bytes?) throws -> [StoredEntry], cutoff: Int64) throws -> CopyChecksum {
        var sum = CopyChecksum()
        var after: Bytes? = nil
        while true {
            let entries = try page(after)
            guard let last = entries.last else { break }
            for e in entries where (e.expiresAtMs ?? .max) > cutoff { sum.add(e) }
            after = last.key
        }
        return sum
    }

    private func countMessages(_ page: (Int64?) throws -> [StoredQueueMessage]) throws -> Int {
        var n = 0, after: Int64? = nil
        while true {
            let m = try page(after)
            guard let last = m.last else { return n }
            n += m.count
            after = last.id
        }
    }

    private func sourceToken() throws -> String {
        let text: String?
        if let tokenFile {
            guard let t = try? String(contentsOfFile: tokenFile, encoding: .utf8) else {
                throw Settings.Invalid(description: "cannot read source token file \(tokenFile)")
            }
            text = t
        } else {
            text = ProcessInfo.processInfo.environment["DENO_KV_ACCESS_TOKEN"]
        }
        guard let token = text?.trimmingCharacters(in: .whitespacesAndNewlines), !token.isEmpty else {
            throw Settings.Invalid(
                description: "a KV Connect source needs its access token: --source-token-file or DENO_KV_ACCESS_TOKEN")
        }
        return token
    }

    static func location(_ text: String, what: String) throws -> DatabaseLocation {
        let location = try DatabaseLocation(text)
        if case .postgres(let uri) = location, uri.hasPassword {
            throw Settings.Invalid(
                description:
                    "the \(what) URI holds a password, which every local user can read in the process list: use PGPASSWORD, PGPASSFILE or ~/.pgpass"
            )
        }
        return location
    }
}

/// Progress on a terminal (stderr), at most a few times a second; silent otherwise.
final class CopyProgressLine {
    private let tty = isatty(STDERR_FILENO) == 1
    private var lastShown = Date.distantPast
    private var shown = false
    private let started = Date()

    func show(_ text: String) {
        guard tty, Date().timeIntervalSince(lastShown) > 0.2 else { return }
        lastShown = Date()
        shown = true
        let seconds = max(0.001, Date().timeIntervalSince(started))
        FileHandle.standardError.write(Data("\r\(text) (\(Int(seconds))s)\u{1B}[K".utf8))
    }

    func note(_ text: String) {
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }

    func finish() {
        if shown { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
