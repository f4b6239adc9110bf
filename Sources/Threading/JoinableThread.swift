import CLinux
import Glibc
import Synchronization

/// pthread_create failed (the process is out of threads or memory).
public struct ThreadStartError: Error, CustomStringConvertible {
    public let code: Int32
    public var description: String { "pthread_create failed: \(String(cString: strerror(code)))" }
}

/// A pthread that can be joined (Foundation's Thread cannot). The owner joins
/// it on its stop path, so the thread's closure may hold the owner strongly:
/// the cycle ends when the thread does, with no hand-broken references.
public final class JoinableThread: Sendable {
    private struct State {
        var tid: pthread_t?
        /// Joined or detached: nothing is left to release.
        var released = false
    }
    private let state = Mutex(State())

    public init(name: String, _ body: @escaping @Sendable () -> Void) throws {
        final class Box {
            let body: () -> Void
            let name: String
            let thread: JoinableThread
            init(_ b: @escaping () -> Void, _ n: String, _ t: JoinableThread) {
                body = b
                name = n
                thread = t
            }
        }
        let box = Unmanaged.passRetained(Box(body, name, self)).toOpaque()
        // The new thread records its own id too, so `isCurrent` holds from its
        // first instruction (pthread_create may write `tid` after it starts).
        var tid = pthread_t()
        let rc = pthread_create(
            &tid, nil,
            { arg in
                let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
                box.thread.state.withLock { $0.tid = pthread_self() }
                kv_set_thread_name(box.name)
                box.body()
                return nil
            }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw ThreadStartError(code: rc)
        }
        state.withLock { $0.tid = tid }
    }

    /// True when called on this thread.
    public var isCurrent: Bool {
        state.withLock { s in s.tid.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    /// Waits for the thread to end. Called on the thread itself (a stop path
    /// reached from one of its own callbacks) it detaches instead, as joining
    /// itself would deadlock. Later calls do nothing.
    public func join() {
        guard let tid = release() else { return }
        if pthread_equal(tid, pthread_self()) != 0 {
            pthread_detach(tid)
        } else {
            pthread_join(tid, nil)
        }
    }

    /// Lets the thread end on its own (its resources are freed when it does),
    /// for a stop path that must not wait for it.
    public func detach() {
        guard let tid = release() else { return }
        pthread_detach(tid)
    }

    private func release() -> pthread_t? {
        state.withLock { s in
            guard !s.released, let tid = s.tid else { return nil }
            s.released = true
            return tid
        }
    }
}
