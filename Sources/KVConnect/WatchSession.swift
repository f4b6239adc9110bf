import Dispatch
import Foundation
import KVEngine
import Logging
import Synchronization

/// One open `/watch` stream. A commit touching a watched key wakes the
/// session (no polling); it then reads every watched key from one snapshot
/// (shared with the other sessions of the same keys woken by that commit,
/// `WatchReads`) and sends a frame if anything differs from the last frame.
/// Wake-ups during a read collapse into one more read. Every frame reports every key with
/// changed=true (Deno 2.9.8 reads changed=false as "deleted").
final class WatchSession: Sendable {
    /// Past this much unsent output the reader is slow: frames are held back
    /// (the next one carries the latest state anyway) instead of piling up.
    static let slowReaderBytes = 256 * 1024
    private static let queue = DispatchQueue(label: "kvconnect.watch", attributes: .concurrent)

    // Per-session state is kept small: one process may hold 50,000 of these.
    private let store: any KVStorage
    private let reads: WatchReads
    private let keys: [Bytes]
    private let stream: any ResponseStreamWriter
    private let codec: WireCodec
    private let pinger: WatchPinger
    private let logger: Logger

    private struct State {
        var dirty = false
        /// `reads` stamp of the latest wake-up: a read started after it will do.
        var wokenAt: UInt64 = 0
        var reading = false
        var closed = false
        var lastSent: [Versionstamp?]?
        var registration: KeyWatch?
        /// Where the pinger keeps this session (nil before start and after
        /// close); set and read by the pinger under its own lock.
        var pingSlot: WatchPinger.Slot?
    }

    private let state = Mutex(State())

    var pingSlot: WatchPinger.Slot? {
        get { state.withLock { $0.pingSlot } }
        set { state.withLock { $0.pingSlot = newValue } }
    }

    init(
        store: any KVStorage, reads: WatchReads, keys: [Bytes], stream: any ResponseStreamWriter, codec: WireCodec,
        pinger: WatchPinger, logger: Logger
    ) {
        self.store = store
        self.reads = reads
        self.keys = keys
        self.stream = stream
        self.codec = codec
        self.pinger = pinger
        self.logger = logger
    }

    func start() {
        // Register before the first read, so no commit slips in between.
        let reg = store.watch(keys: keys) { [weak self] in self?.changed() }
        state.withLock { $0.registration = reg }
        pinger.add(self)
        // The session lives as long as the stream: the close handler holds it.
        stream.onClose { [self] in self.close() }
        changed()
    }

    /// Runs on the committing thread (or the I/O thread at start, the
    /// pinger's): only registers for a read, which never blocks. No dispatch
    /// per session: 10,000 watchers of one key woken by one commit cost the
    /// writer thread a few lock operations each, not 10,000 thread hand-offs
    /// before the commit is acknowledged.
    private func changed() {
        let stamp = reads.stamp()
        let startRead = state.withLock { s in
            if s.closed { return false }
            s.dirty = true
            s.wokenAt = stamp
            if s.reading { return false }
            s.reading = true
            return true
        }
        if startRead { pump() }
    }

    /// One read (own or shared) for the wake-ups so far; `deliver` runs when
    /// it is done and pumps again if more came meanwhile. Only one is in
    /// progress per session (`reading`).
    private func pump() {
        let since: UInt64? = state.withLock { s in
            if s.closed {
                s.reading = false
                return nil
            }
            if stream.pendingBytes > Self.slowReaderBytes {
                // Leave `dirty` set; the next ping retries with fresh state.
                s.reading = false
                return nil
            }
            s.dirty = false
            return s.wokenAt
        }
        guard let since else { return }
        reads.read(keys, since: since, queue: Self.queue) { [self] result in deliver(result) }
    }

    private func deliver(_ result: Result<[KVEntry?], any Error>) {
        let entries: [KVEntry?]
        switch result {
        case let .success(e): entries = e
        case let .failure(error):
            logger.debug("watch read failed, ending stream: \(error)")
            stream.finish()
            close()
            return
        }
        let stamps = entries.map { $0?.versionstamp }
        // Sessions of one shared read deliver concurrently; each its own.
        let send = state.withLock { s in
            let send = !s.closed && stamps != s.lastSent
            if send { s.lastSent = stamps }
            return send
        }
        if send && !stream.write(codec.encodeWatchFrame(entries)) {
            close()
            return
        }

        let again = state.withLock { s in
            if !s.dirty || s.closed {
                s.reading = false
                return false
            }
            return true
        }
        if !again { return }
        Self.queue.async { [weak self] in self?.pump() }
    }

    /// Keep-alive (an empty frame), from the pinger once per interval.
    func ping() {
        if !stream.write([0, 0, 0, 0]) {
            close()
            return
        }
        let retry = state.withLock { s in s.dirty && !s.reading && !s.closed }
        if retry { changed() }
    }

    func close() {
        let reg: KeyWatch?? = state.withLock { s in
            if s.closed { return nil }
            s.closed = true
            defer { s.registration = nil }
            return .some(s.registration)
        }
        guard let reg else { return }
        reg?.cancel()
        pinger.remove(self)
    }
}

/// Keep-alive pings of all watch streams of a service from one timer. A
/// timer per stream cost memory per stream and, at 50,000 streams and 5 s,
/// 10,000 timer wake-ups a second; here the sessions are spread over
/// `slices` groups and one tick every interval/slices pings one group, so
/// each stream gets one ping per interval and the load stays even.
///
/// At most `maxPerSecond` pings go out in all: past that many streams per
/// interval, each stream's interval stretches. Deno's HTTP/2 client (h2
/// 0.4.19) closes a connection with ENHANCE_YOUR_CALM "too_many_data_frames"
/// once too many small DATA frames wait unread in it; 50,000 watches on one
/// handle pinged every 5 s (10,000 frames/s) did that whenever its event
/// loop fell behind for a moment. On HTTP/2 a dead client is noticed on the
/// connection anyway, whichever of its streams is pinged.
final class WatchPinger: Sendable {
    typealias Slot = Int
    private static let slices = 16

    private struct State {
        var groups: [[ObjectIdentifier: WatchSession]] = Array(repeating: [:], count: WatchPinger.slices)
        var nextSlot = 0
        var tickIndex = 0
        /// The group being pinged when it takes more than one tick.
        var pending: [WatchSession] = []
        var pendingOffset = 0
        var timer: DispatchSourceTimer?
    }

    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "kvconnect.watch-ping")
    private let tickMs: Int
    private let perTick: Int

    init(intervalMs: Int, maxPerSecond: Int) {
        tickMs = max(1, max(10, intervalMs) / Self.slices)
        perTick = max(1, maxPerSecond * tickMs / 1000)
    }

    deinit { state.withLock { $0.timer }?.cancel() }

    func add(_ session: WatchSession) {
        state.withLock { s in
            let slot = s.nextSlot % Self.slices
            s.nextSlot &+= 1
            session.pingSlot = slot
            s.groups[slot][ObjectIdentifier(session)] = session
            if s.timer == nil {
                // Started on first use (a service without watches has no timer).
                let t = DispatchSource.makeTimerSource(queue: queue)
                let step = DispatchTimeInterval.milliseconds(tickMs)
                t.schedule(deadline: .now() + step, repeating: step)
                t.setEventHandler { [weak self] in self?.tick() }
                // Its first tick is `step` away, on `queue`: resuming under the lock blocks nothing.
                t.resume()
                s.timer = t
            }
        }
    }

    func remove(_ session: WatchSession) {
        state.withLock { s in
            if let slot = session.pingSlot {
                s.groups[slot][ObjectIdentifier(session)] = nil
                session.pingSlot = nil
            }
        }
    }

    private func tick() {
        let batch = state.withLock { s in
            if s.pendingOffset >= s.pending.count {
                s.pending = Array(s.groups[s.tickIndex].values)
                s.pendingOffset = 0
                s.tickIndex = (s.tickIndex + 1) % Self.slices
            }
            let end = min(s.pending.count, s.pendingOffset + perTick)
            let batch = Array(s.pending[s.pendingOffset..<end])
            s.pendingOffset = end
            if s.pendingOffset >= s.pending.count {
                s.pending = []
                s.pendingOffset = 0
            }
            return batch
        }
        for session in batch { session.ping() }
    }
}
