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
    /// The thread's id (0 until known). Atomics, not a Mutex: the new thread
    /// and its creator both store it at start, and ThreadSanitizer cannot see
    /// the hand-over of a contended Mutex (a kernel futex hand-off).
    private let tid = Atomic<UInt>(0)
    /// Joined or detached: nothing is left to release.
    private let released = Atomic<Bool>(false)

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
        var created = pthread_t()
        let rc = pthread_create(
            &created, nil,
            { arg in
                let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
                box.thread.tid.store(pthread_self(), ordering: .releasing)
                kv_set_thread_name(box.name)
                box.body()
                return nil
            }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw ThreadStartError(code: rc)
        }
        tid.store(created, ordering: .releasing)
    }

    /// True when called on this thread.
    public var isCurrent: Bool {
        let t = tid.load(ordering: .acquiring)
        return t != 0 && pthread_equal(t, pthread_self()) != 0
    }

    /// Waits for the thread to end. Called on the thread itself (a stop path
    /// reached from one of its own callbacks) it detaches instead, as joining
    /// itself would deadlock. Later calls do nothing.
    public func join() {
        guard let t = release() else { return }
        if pthread_equal(t, pthread_self()) != 0 {
            pthread_detach(t)
        } else {
            pthread_join(t, nil)
        }
    }

    /// Lets the thread end on its own (its resources are freed when it does),
    /// for a stop path that must not wait for it.
    public func detach() {
        guard let t = release() else { return }
        pthread_detach(t)
    }

    private func release() -> pthread_t? {
        guard released.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return nil }
        return tid.load(ordering: .acquiring)
    }
}
