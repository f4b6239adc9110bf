import CCurl
import Foundation
import Synchronization
import Threading

/// A POST-only HTTP client on libcurl's multi interface, driven by one thread
/// of its own: requests are handed over under a lock and `curl_multi_wakeup`,
/// the thread runs every transfer and calls each completion exactly once
/// (status, or nil on a connection error or timeout). The multi handle's
/// connection cache keeps connections to the receiver alive between
/// deliveries (HTTP/1.1 keep-alive), up to `maxConnections` per host.
/// Why libcurl and not URLSession: see docs/ARCHITECTURE.md (Queues).
final class CurlMultiClient: Sendable {
    struct Request {
        var url: String
        var headers: [String]
        var body: [UInt8]
        var timeoutMs: Int
        var completion: @Sendable (_ status: Int?, _ error: String?) -> Void
    }

    /// One transfer's memory, owned by the thread from add to completion.
    private final class Transfer {
        let request: Request
        var headers: UnsafeMutablePointer<curl_slist>?
        let body: UnsafeMutableRawPointer
        let url: UnsafeMutablePointer<CChar>
        init(_ r: Request) {
            request = r
            let body = UnsafeMutableRawPointer.allocate(byteCount: max(1, r.body.count), alignment: 1)
            r.body.withUnsafeBytes { if let b = $0.baseAddress { body.copyMemory(from: b, byteCount: $0.count) } }
            self.body = body
            url = strdup(r.url)
            for h in r.headers { headers = curl_slist_append(headers, h) }
        }
        deinit {
            body.deallocate()
            free(url)
            curl_slist_free_all(headers)
        }
    }

    private static let globalInit: Void = { curl_global_init(3) /* CURL_GLOBAL_ALL */ }()

    /// The multi handle. @unchecked Sendable: other threads only call
    /// `curl_multi_wakeup` on it (thread-safe by libcurl's contract); every
    /// other call is on the client thread, and `curl_multi_cleanup` after that
    /// thread has been joined.
    private struct MultiHandle: @unchecked Sendable {
        let pointer: UnsafeMutableRawPointer
    }

    /// Requests handed to the thread, and whether the client is stopping.
    private struct State {
        var pending: [Request] = []
        var stopping = false
    }

    private let handle: MultiHandle
    private var multi: UnsafeMutableRawPointer { handle.pointer }
    private let state = Mutex(State())
    private let thread = Mutex<JoinableThread?>(nil)

    init(maxConnections: Int) throws {
        _ = Self.globalInit
        handle = MultiHandle(pointer: curl_multi_init())
        _ = kv_curl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, max(1, maxConnections))
        _ = kv_curl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, max(1, maxConnections))
        do {
            // `stop` joins the thread, so it may hold the client.
            let t = try JoinableThread(name: "webhook-curl") { [self] in self.run() }
            thread.withLock { $0 = t }
        } catch {
            curl_multi_cleanup(multi)
            throw error
        }
    }

    func post(_ r: Request) {
        let accepted = state.withLock { s in
            if s.stopping { return false }
            s.pending.append(r)
            return true
        }
        guard accepted else { return r.completion(nil, "client stopped") }
        curl_multi_wakeup(multi)
    }

    /// Ends the thread; transfers still running complete with an error.
    func stop() {
        let was = state.withLock { s in
            defer { s.stopping = true }
            return s.stopping
        }
        if was { return }
        curl_multi_wakeup(multi)
        thread.withLock { $0 }?.join()
        curl_multi_cleanup(multi)
    }

    private func run() {
        var running: [UnsafeMutableRawPointer: Transfer] = [:]
        var idle: [UnsafeMutableRawPointer] = []  // easy handles kept for reuse
        while true {
            let (batch, stop) = state.withLock { s in
                defer { s.pending.removeAll(keepingCapacity: true) }
                return (s.pending, s.stopping)
            }
            if stop {
                for (h, t) in running {
                    curl_multi_remove_handle(multi, h)
                    curl_easy_cleanup(h)
                    t.request.completion(nil, "client stopped")
                }
                for r in batch { r.completion(nil, "client stopped") }
                idle.forEach { curl_easy_cleanup($0) }
                return
            }
            for r in batch {
                let h = idle.popLast() ?? curl_easy_init()!
                let t = Transfer(r)
                configure(h, t)
                running[h] = t
                curl_multi_add_handle(multi, h)
            }
            var stillRunning: Int32 = 0
            curl_multi_perform(multi, &stillRunning)
            var left: Int32 = 0
            while let msg = curl_multi_info_read(multi, &left) {
                guard msg.pointee.msg == CURLMSG_DONE, let h = msg.pointee.easy_handle else { continue }
                let result = kv_curl_msg_result(msg)
                let status = kv_curl_response_code(h)
                curl_multi_remove_handle(multi, h)
                guard let t = running.removeValue(forKey: h) else { continue }
                curl_easy_reset(h)
                idle.append(h)
                if result == CURLE_OK {
                    t.request.completion(Int(status), nil)
                } else {
                    t.request.completion(nil, String(cString: curl_easy_strerror(result)))
                }
            }
            // Sleeps until a socket is ready, curl's next timeout, or a wakeup.
            curl_multi_poll(multi, nil, 0, 1000, nil)
        }
    }

    private func configure(_ h: UnsafeMutableRawPointer, _ t: Transfer) {
        _ = kv_curl_easy_setopt_ptr(h, CURLOPT_URL, t.url)
        _ = kv_curl_easy_setopt_long(h, CURLOPT_POST, 1)
        _ = kv_curl_easy_setopt_ptr(h, CURLOPT_POSTFIELDS, t.body)
        _ = kv_curl_easy_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(t.request.body.count))
        _ = kv_curl_easy_setopt_ptr(h, CURLOPT_HTTPHEADER, t.headers)
        _ = kv_curl_easy_setopt_long(h, CURLOPT_TIMEOUT_MS, t.request.timeoutMs)
        _ = kv_curl_easy_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = kv_curl_easy_setopt_long(h, CURLOPT_TCP_NODELAY, 1)
        _ = kv_curl_easy_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        _ = kv_curl_easy_setopt_ptr(h, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = kv_curl_discard_body(h)
    }
}
