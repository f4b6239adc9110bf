import Threading
import CLinux
import CMicroHTTPD   // epoll/eventfd declarations (GNU headers)
import Glibc

/// Something an event loop owns: one socket, driven only on the loop thread.
protocol LoopConnection: AnyObject {
    /// epoll readiness (EPOLLIN/EPOLLOUT/EPOLLRDHUP/EPOLLERR/EPOLLHUP bits).
    func handleEvents(_ events: UInt32)
    /// Periodic housekeeping (timeouts), called every `EventLoop.tickMs`.
    func tick(nowMs: UInt64)
    /// Close everything now (loop shutting down).
    func shutdown()
}

/// One epoll thread. Sockets are edge-triggered for both directions so nobody
/// has to re-arm interest: readers drain until EAGAIN, writers keep pending
/// output and continue on the next EPOLLOUT edge. Other threads talk to the
/// loop only through `execute`, which queues a closure and pokes an eventfd.
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

    // Shared state, protected by `lock`.
    private let lock = NSLockLite()
    private var tasks: [() -> Void] = []
    private var stopRequested = false
    private var closed = false   // wakeFd closed; execute() drops tasks
    private var loopThread: pthread_t?

    private var thread: JoinableThread?

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
        ev.data.u64 = 0   // token 0 = the wake-up eventfd
        _ = epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFd, &ev)
    }

    deinit { readBuffer.deallocate() }

    func start() throws {
        thread = try JoinableThread(name: "h2-loop-\(index)") { [self] in run() }
    }

    /// True when called on this loop's thread (lets respond() skip the hop).
    var inLoopThread: Bool {
        lock.lock(); defer { lock.unlock() }
        guard let t = loopThread else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    /// Runs `task` on the loop thread. Dropped silently once the loop stopped,
    /// so late responses for dead connections are harmless. Returns false
    /// when dropped.
    @discardableResult
    func execute(_ task: @escaping () -> Void) -> Bool {
        lock.lock()
        if closed || stopRequested { lock.unlock(); return false }
        let wasEmpty = tasks.isEmpty
        tasks.append(task)
        if wasEmpty {
            var one: UInt64 = 1
            _ = write(wakeFd, &one, 8)
        }
        lock.unlock()
        return true
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
        lock.lock()
        let already = stopRequested
        stopRequested = true
        if !already && !closed {
            var one: UInt64 = 1
            _ = write(wakeFd, &one, 8)
        }
        lock.unlock()
        thread?.join()
        thread = nil
    }

    private func run() {
        lock.lock(); loopThread = pthread_self(); lock.unlock()
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        lastTick = SocketOptions.nowMs()
        while true {
            let n = events.withUnsafeMutableBufferPointer {
                epoll_wait(epfd, $0.baseAddress, Int32($0.count), Int32(EventLoop.tickMs))
            }
            if n < 0 && errno != EINTR { break }
            var wake = false
            if n > 0 {
                for i in 0..<Int(n) {
                    let token = events[i].data.u64
                    if token == 0 { wake = true; continue }
                    // Hold a strong reference: the handler may deregister itself.
                    if let conn = connections[token] { conn.handleEvents(events[i].events) }
                }
            }
            if wake {
                var value: UInt64 = 0
                _ = read(wakeFd, &value, 8)
            }
            lock.lock()
            let pending = tasks
            tasks.removeAll(keepingCapacity: true)
            let stopping = stopRequested
            lock.unlock()
            // Pending tasks run even when stopping: they may carry accepted
            // sockets that must be registered (and then closed) exactly once.
            for task in pending { task() }
            if stopping { break }
            let now = SocketOptions.nowMs()
            if now &- lastTick >= EventLoop.tickMs {
                lastTick = now
                for conn in Array(connections.values) { conn.tick(nowMs: now) }
            }
        }
        // Shutdown: close every socket this loop owns, then the loop itself.
        for conn in Array(connections.values) { conn.shutdown() }
        connections.removeAll()
        lock.lock()
        closed = true
        tasks.removeAll()
        SocketOptions.close(wakeFd)
        lock.unlock()
        SocketOptions.close(epfd)
    }
}

/// A pthread mutex without Foundation (usable from C callbacks too).
final class NSLockLite: @unchecked Sendable {
    private let m: UnsafeMutablePointer<pthread_mutex_t>
    init() {
        m = .allocate(capacity: 1)
        pthread_mutex_init(m, nil)
    }
    deinit {
        pthread_mutex_destroy(m)
        m.deallocate()
    }
    @inline(__always) func lock() { pthread_mutex_lock(m) }
    @inline(__always) func unlock() { pthread_mutex_unlock(m) }
    @inline(__always) func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock(); defer { unlock() }
        return try body()
    }
}
