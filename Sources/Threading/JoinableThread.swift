import CLinux
import Glibc

/// pthread_create failed (the process is out of threads or memory).
public struct ThreadStartError: Error, CustomStringConvertible {
    public let code: Int32
    public var description: String { "pthread_create failed: \(String(cString: strerror(code)))" }
}

/// A pthread that can be joined (Foundation's Thread cannot).
/// @unchecked: `tid` and `started` are written by init and by the owner's one
/// `join()` call (owners join from their stop path only), never concurrently.
public final class JoinableThread: @unchecked Sendable {
    private var tid = pthread_t()
    private var started = false

    public init(name: String, _ body: @escaping @Sendable () -> Void) throws {
        final class Box { let body: () -> Void; let name: String
            init(_ b: @escaping () -> Void, _ n: String) { body = b; name = n } }
        let box = Unmanaged.passRetained(Box(body, name)).toOpaque()
        let rc = pthread_create(&tid, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            kv_set_thread_name(box.name)
            box.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw ThreadStartError(code: rc)
        }
        started = true
    }

    public func join() {
        guard started else { return }
        started = false
        // stop() called from one of our own threads (e.g. inside a handler):
        // joining itself would deadlock, so detach instead.
        if pthread_equal(tid, pthread_self()) != 0 {
            pthread_detach(tid)
            return
        }
        pthread_join(tid, nil)
    }
}

