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

final class LiveFeed: @unchecked Sendable {
    static let queue = DispatchQueue(label: "kvconsole.live")
    static let pageSize = 100

    private let store: any KVStorage
    private let range: ReadRange
    private let stream: any ResponseStreamWriter
    private let authorized: @Sendable () -> Bool
    private let lock = NSLock()
    private var closed = false
    private var lastFingerprint: [Bytes]?
    private var lastVersionstamp: Versionstamp = []
    private var watchedKeys: [Bytes] = []
    private var registration: KeyWatch?
    private var timer: DispatchSourceTimer?
    private var ticks = 0

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
        let t = DispatchSource.makeTimerSource(queue: Self.queue)
        t.schedule(deadline: .now() + .seconds(1), repeating: .seconds(1))
        t.setEventHandler { [weak self] in self?.tick() }
        lock.withLock { timer = t }
        t.resume()
        stream.onClose { [self] in self.close() }
        // Tell the page the feed is open (EventSource fires `open` on headers only).
        stream.write(Array("retry: 2000\nevent: ready\ndata: {}\n\n".utf8))
        Self.queue.async { [self] in self.check(force: true) }
    }

    private func tick() {
        lock.lock()
        ticks += 1
        // Pings also find a client that left (the front notices on a write).
        let ping = ticks % 5 == 0
        lock.unlock()
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
        lock.lock()
        if closed || (!force && stamp == lastVersionstamp) {
            lock.unlock()
            return
        }
        lastVersionstamp = stamp
        lock.unlock()
        guard let entries = try? store.snapshotRead([range]).first else { return }
        let fingerprint = entries.map { $0.key + [0xFF] + $0.versionstamp }
        let keys = entries.map(\.key)
        lock.lock()
        let first = lastFingerprint == nil
        let changed = !first && fingerprint != lastFingerprint
        lastFingerprint = fingerprint
        let rewatch = keys != watchedKeys && !closed
        let old = rewatch ? registration : nil
        if rewatch { watchedKeys = keys }
        lock.unlock()
        if rewatch {
            old?.cancel()
            let reg =
                keys.isEmpty
                ? nil
                : store.watch(keys: keys) { [weak self] in
                    guard let feed = self else { return }
                    LiveFeed.queue.async { feed.check(force: true) }
                }
            lock.lock()
            if closed {
                lock.unlock()
                reg?.cancel()
                return
            }
            registration = reg
            lock.unlock()
        }
        if changed {
            let hex = stamp.map { String(format: "%02x", $0) }.joined()
            if !stream.write(Array("event: change\ndata: {\"versionstamp\":\"\(hex)\"}\n\n".utf8)) { close() }
        }
    }

    func close() {
        lock.lock()
        if closed {
            lock.unlock()
            return
        }
        closed = true
        let reg = registration, t = timer
        registration = nil
        timer = nil
        lock.unlock()
        reg?.cancel()
        t?.cancel()
    }
}
