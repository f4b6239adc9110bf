/// Something an event loop owns: one socket, driven only on the loop thread.
protocol LoopConnection: AnyObject {
    /// epoll readiness (EPOLLIN/EPOLLOUT/EPOLLRDHUP/EPOLLERR/EPOLLHUP bits).
    func handleEvents(_ events: UInt32)
    /// Periodic housekeeping (timeouts), called every `EventLoop.tickMs`.
    func tick(nowMs: UInt64)
    /// Close everything now (loop shutting down).
    func shutdown()
}
