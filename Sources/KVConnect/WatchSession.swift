import Dispatch
import Foundation
import KVEngine
import Logging

/// One open `/watch` stream. A commit touching a watched key wakes the
/// session (no polling); it then reads every watched key from one snapshot
/// and sends a frame if anything differs from the last frame. Wake-ups during
/// a read collapse into one more read. Every frame reports every key with
/// changed=true (Deno 2.9.8 reads changed=false as "deleted").
final class WatchSession: @unchecked Sendable {
    /// Past this much unsent output the reader is slow: frames are held back
    /// (the next one carries the latest state anyway) instead of piling up.
    static let slowReaderBytes = 256 * 1024
    private static let queue = DispatchQueue(label: "kvconnect.watch", attributes: .concurrent)

    private let store: any KVStorage
    private let keys: [Bytes]
    private let stream: any ResponseStreamWriter
    private let codec: WireCodec
    private let pingInterval: DispatchTimeInterval
    private let logger: Logger

    private let lock = NSLock()
    private var dirty = false
    private var reading = false
    private var closed = false
    private var lastSent: [Versionstamp?]?
    private var registration: KeyWatch?
    private var timer: DispatchSourceTimer?

    init(store: any KVStorage, keys: [Bytes], stream: any ResponseStreamWriter, codec: WireCodec,
         pingInterval: DispatchTimeInterval, logger: Logger) {
        self.store = store
        self.keys = keys
        self.stream = stream
        self.codec = codec
        self.pingInterval = pingInterval
        self.logger = logger
    }

    func start() {
        // Register before the first read, so no commit slips in between.
        let reg = store.watch(keys: keys) { [weak self] in self?.changed() }
        let t = DispatchSource.makeTimerSource(queue: Self.queue)
        t.schedule(deadline: .now() + pingInterval, repeating: pingInterval)
        t.setEventHandler { [weak self] in self?.tick() }
        lock.lock()
        registration = reg
        timer = t
        lock.unlock()
        t.resume()
        // The session lives as long as the stream: the close handler holds it.
        stream.onClose { [self] in self.close() }
        changed()
    }

    private func changed() {
        lock.lock()
        if closed { lock.unlock(); return }
        dirty = true
        if reading { lock.unlock(); return }
        reading = true
        lock.unlock()
        Self.queue.async { [weak self] in self?.pump() }
    }

    private func pump() {
        while true {
            lock.lock()
            if closed { reading = false; lock.unlock(); return }
            if stream.pendingBytes > Self.slowReaderBytes {
                // Leave `dirty` set; the next tick retries with fresh state.
                reading = false
                lock.unlock()
                return
            }
            dirty = false
            lock.unlock()

            let entries: [KVEntry?]
            do {
                entries = try store.readKeys(keys)
            } catch {
                logger.debug("watch read failed, ending stream: \(error)")
                stream.finish()
                close()
                return
            }
            let stamps = entries.map { $0?.versionstamp }
            if stamps != lastSent {
                lastSent = stamps
                if !stream.write(codec.encodeWatchFrame(entries)) { close(); return }
            }

            lock.lock()
            if !dirty || closed { reading = false; lock.unlock(); return }
            lock.unlock()
        }
    }

    private func tick() {
        if !stream.write([0, 0, 0, 0]) { close(); return }
        lock.lock()
        let retry = dirty && !reading && !closed
        lock.unlock()
        if retry { changed() }
    }

    func close() {
        lock.lock()
        if closed { lock.unlock(); return }
        closed = true
        let reg = registration, t = timer
        registration = nil
        timer = nil
        lock.unlock()
        reg?.cancel()
        t?.cancel()
    }
}
