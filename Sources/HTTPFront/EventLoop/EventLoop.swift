import CLinux
import Glibc
import Synchronization
import Threading

/// One epoll thread. Sockets are edge-triggered for both directions so nobody
/// has to re-arm interest: readers drain until EAGAIN, writers keep pending
/// output and continue on the next EPOLLOUT edge. Other threads talk to the
/// loop only through `execute`, which queues a closure and pokes an eventfd.
///
/// @unchecked Sendable: the connection table, token counter and tick time
/// are touched only on the loop thread (`register`, `replace`, `deregister`
/// and `connectionCount` are documented loop-thread only); everything other
/// threads touch is in `shared`, and the fds are immutable.
final class EventLoop: @unchecked Sendable {
    static let tickMs: UInt64 = 200

    let index: Int
    private let epfd: Int32
    private let wakeFd: Int32

    // Loop-thread state.
    /// Scratch buffer for socket reads, shared by all connections of this loop.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    private var connections: [UInt64: LoopConnection] = [:]
    private var nextToken: UInt64 = 1
    private var lastTick: UInt64 = 0

    /// What other threads share with the loop thread.
    private struct Shared {
        var tasks: [@Sendable () -> Void] = []
        var stopRequested = false
        var closed = false  // wakeFd closed; execute() drops tasks
        var loopThread: pthread_t?
        var thread: JoinableThread?
    }
    private let shared = Mutex(Shared())

    init(index: Int) throws {
        self.index = index
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        if epfd < 0 { throw HTTPServerError.system("epoll_create1", errno) }
        wakeFd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        if wakeFd < 0 {
            let e = errno
            SocketOptions.close(epfd)
            throw HTTPServerError.system("eventfd", e)
        }
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.u64 = 0  // token 0 = the wake-up eventfd
        _ = epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFd, &ev)
    }

    deinit { readBuffer.deallocate() }

    func start() throws {
        let thread = try JoinableThread(name: "h2-loop-\(index)") { [self] in run() }
        shared.withLock { $0.thread = thread }
    }

    /// True when called on this loop's thread (lets respond() skip the hop).
    var inLoopThread: Bool {
        shared.withLock {
            guard let t = $0.loopThread else { return false }
            return pthread_equal(t, pthread_self()) != 0
        }
    }

    /// Runs `task` on the loop thread. Dropped silently once the loop stopped,
    /// so late responses for dead connections are harmless. Returns false
    /// when dropped.
    @discardableResult
    func execute(_ task: @escaping @Sendable () -> Void) -> Bool {
        let wakeFd = self.wakeFd
        return shared.withLock { s in
            if s.closed || s.stopRequested { return false }
            let wasEmpty = s.tasks.isEmpty
            s.tasks.append(task)
            // Under the lock: the loop closes wakeFd under it too.
            if wasEmpty { EventLoop.poke(wakeFd) }
            return true
        }
    }

    private static func poke(_ fd: Int32) {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Registers a socket. Loop thread only. Returns the token or nil on failure.
    @discardableResult
    func register(fd: Int32, connection: LoopConnection) -> UInt64? {
        let token = nextToken
        nextToken += 1
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        ev.data.u64 = token
        if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0 { return nil }
        connections[token] = connection
        return token
    }

    /// Swaps the object behind a token (sniffer → HTTP/2 connection). Loop thread only.
    func replace(token: UInt64, with connection: LoopConnection) {
        connections[token] = connection
    }

    /// Forgets a socket; the caller closes (or hands over) the fd. Loop thread only.
    func deregister(token: UInt64, fd: Int32) {
        var ev = epoll_event()
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev)
        connections[token] = nil
    }

    var connectionCount: Int { connections.count }

    func stop() {
        let wakeFd = self.wakeFd
        let thread = shared.withLock { s -> JoinableThread? in
            let already = s.stopRequested
            s.stopRequested = true
            if !already && !s.closed { EventLoop.poke(wakeFd) }
            let t = s.thread
            s.thread = nil
            return t
        }
        thread?.join()
    }

    private func run() {
        shared.withLock { $0.loopThread = pthread_self() }
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        lastTick = UInt64(MonotonicClock.nowMs())
        while true {
            let n = events.withUnsafeMutableBufferPointer {
                epoll_wait(epfd, $0.baseAddress, Int32($0.count), Int32(EventLoop.tickMs))
            }
            if n < 0 && errno != EINTR { break }
            var wake = false
            if n > 0 {
                for i in 0..<Int(n) {
                    let token = events[i].data.u64
                    if token == 0 {
                        wake = true
                        continue
                    }
                    // Hold a strong reference: the handler may deregister itself.
                    if let conn = connections[token] { conn.handleEvents(events[i].events) }
                }
            }
            if wake {
                var value: UInt64 = 0
                _ = read(wakeFd, &value, 8)
            }
            let (pending, stopping) = shared.withLock { s in
                let pending = s.tasks
                s.tasks.removeAll(keepingCapacity: true)
                return (pending, s.stopRequested)
            }
            // Pending tasks run even when stopping: they may carry accepted
            // sockets that must be registered (and then closed) exactly once.
            for task in pending { task() }
            if stopping { break }
            let now = UInt64(MonotonicClock.nowMs())
            if now &- lastTick >= EventLoop.tickMs {
                lastTick = now
                for conn in Array(connections.values) { conn.tick(nowMs: now) }
            }
        }
        // Shutdown: close every socket this loop owns, then the loop itself.
        for conn in Array(connections.values) { conn.shutdown() }
        connections.removeAll()
        let wakeFd = self.wakeFd
        shared.withLock { s in
            s.closed = true
            s.tasks.removeAll()
            SocketOptions.close(wakeFd)
        }
        SocketOptions.close(epfd)
    }
}
