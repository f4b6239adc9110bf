// The live view: one server-sent-events stream per open console page,
// telling it when what it shows (a key, or the first page of a prefix)
// changed. No thread per viewer: a commit to a shown key wakes the feed
// through `store.watch`; a shared timer notices new keys under the prefix
// (the commit counter moved, so the page's range is read again). The stream
// ends when its session does (sign-out, expiry, token removed).

import Dispatch
import Foundation
import KVConnect
import KVEngine
import Synchronization

final class LiveFeed: Sendable {
    static let queue = DispatchQueue(label: "kvconsole.live")
    static let pageSize = 100

    private let store: any KVStorage
    private let range: ReadRange
    private let stream: any ResponseStreamWriter
    private let authorized: @Sendable () -> Bool
    private struct State {
        var closed = false
        var lastFingerprint: [Bytes]?
        var lastVersionstamp: Versionstamp = []
        var watchedKeys: [Bytes] = []
        var registration: KeyWatch?
        var timer: RepeatingTimer?
        var ticks = 0
    }
    private let state = Mutex(State())

    init(
        store: any KVStorage, range: ReadRange, stream: any ResponseStreamWriter,
        authorized: @escaping @Sendable () -> Bool
    ) {
        self.authorized = authorized
        self.store = store
        self.range = range
        self.stream = stream
    }

    func start() {
        let t = RepeatingTimer(queue: Self.queue, first: .seconds(1), interval: .seconds(1)) { [weak self] in
            self?.tick()
        }
        state.withLock { $0.timer = t }
        stream.onClose { [self] in self.close() }
        // Tell the page the feed is open (EventSource fires `open` on headers only).
        stream.write(Array("retry: 2000\nevent: ready\ndata: {}\n\n".utf8))
        Self.queue.async { [self] in self.check(force: true) }
    }

    private func tick() {
        // Pings also find a client that left (the front notices on a write).
        let ping = state.withLock { s in
            s.ticks += 1
            return s.ticks % 5 == 0
        }
        guard authorized() else {
            stream.finish()
            close()
            return
        }
        if ping, !stream.write(Array(": ping\n\n".utf8)) {
            close()
            return
        }
        check(force: false)
    }

    /// On the feed queue: reads the range again when something may have
    /// changed, and tells the page if what it shows differs.
    private func check(force: Bool) {
        let stamp = store.currentVersionstamp
        let skip = state.withLock { s in
            if s.closed || (!force && stamp == s.lastVersionstamp) { return true }
            s.lastVersionstamp = stamp
            return false
        }
        if skip { return }
        guard let entries = try? store.snapshotRead([range]).first else { return }
        let fingerprint = entries.map { $0.key + [0xFF] + $0.versionstamp }
        let keys = entries.map(\.key)
        let (changed, rewatch, old) = state.withLock { s in
            let first = s.lastFingerprint == nil
            let changed = !first && fingerprint != s.lastFingerprint
            s.lastFingerprint = fingerprint
            let rewatch = keys != s.watchedKeys && !s.closed
            let old = rewatch ? s.registration : nil
            if rewatch { s.watchedKeys = keys }
            return (changed, rewatch, old)
        }
        if rewatch {
            old?.cancel()
            let reg =
                keys.isEmpty
                ? nil
                : store.watch(keys: keys) { [weak self] in
                    guard let feed = self else { return }
                    LiveFeed.queue.async { feed.check(force: true) }
                }
            let closed = state.withLock { s in
                if !s.closed { s.registration = reg }
                return s.closed
            }
            if closed {
                reg?.cancel()
                return
            }
        }
        if changed {
            let hex = stamp.map { String(format: "%02x", $0) }.joined()
            if !stream.write(Array("event: change\ndata: {\"versionstamp\":\"\(hex)\"}\n\n".utf8)) { close() }
        }
    }

    func close() {
        let (reg, t) = state.withLock { s -> (KeyWatch?, RepeatingTimer?) in
            if s.closed { return (nil, nil) }
            s.closed = true
            defer {
                s.registration = nil
                s.timer = nil
            }
            return (s.registration, s.timer)
        }
        reg?.cancel()
        t?.cancel()
    }
}
