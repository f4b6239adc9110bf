import Foundation
import Glibc
import Logging
import XCTest
@testable import HTTPFront

/// Counts stream events so tests can wait for them.
final class StreamRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var _started = 0
    private var _closed = 0
    private var _streams: [String: HTTPResponseStream] = [:]
    var started: Int { lock.withLock { _started } }
    var closed: Int { lock.withLock { _closed } }
    func didStart(_ name: String, _ s: HTTPResponseStream) {
        lock.withLock {
            _started += 1
            _streams[name] = s
        }
    }
    func didClose() { lock.withLock { _closed += 1 } }
    func stream(_ name: String) -> HTTPResponseStream? { lock.withLock { _streams[name] } }
    func forget() { lock.withLock { _streams.removeAll() } }
}

/// /frames/N/ms: N frames "frame-i\n", one every ms, then finish.
/// /forever: a chunk every 100 ms until the stream closes.
/// /big/N: N bytes queued at once, then finish.
/// Anything else: the echo handler.
struct StreamingHandler: HTTPRequestHandler {
    let recorder: StreamRecorder

    func handle(_ request: HTTPRequest, respond: @escaping @Sendable (HTTPResponse) -> Void) {
        let parts = request.path.split(separator: "/").map(String.init)
        let recorder = self.recorder
        let headers = [(name: "content-type", value: "application/octet-stream")]
        switch parts.first {
        case "frames":
            let n = Int(parts[1]) ?? 3, ms = Int(parts[2]) ?? 10
            respond(
                .streaming(headers: headers) { stream in
                    recorder.didStart(request.path, stream)
                    stream.onClose { recorder.didClose() }
                    Thread.detachNewThread {
                        for i in 0..<n {
                            usleep(useconds_t(ms * 1000))
                            stream.write(Array("frame-\(i)\n".utf8))
                        }
                        stream.finish()
                        stream.finish()  // idempotent
                    }
                })
        case "forever":
            respond(
                .streaming(headers: headers) { stream in
                    recorder.didStart(request.path, stream)
                    stream.onClose { recorder.didClose() }
                    Thread.detachNewThread {
                        // A ping-like frame, as the watch layer writes.
                        while stream.write([0, 0, 0, 0]) { usleep(100_000) }
                    }
                })
        case "silent":
            // Never writes: only the headers go out; ends with the client.
            respond(
                .streaming(status: 201, headers: headers) { stream in
                    recorder.didStart(request.path, stream)
                    stream.onClose { recorder.didClose() }
                })
        case "concurrent":
            // 4 threads write to one stream at once; the last one finishes.
            let n = Int(parts[1]) ?? 100
            respond(
                .streaming(headers: headers) { stream in
                    recorder.didStart(request.path, stream)
                    stream.onClose { recorder.didClose() }
                    let group = DispatchGroup()
                    for t in 0..<4 {
                        group.enter()
                        Thread.detachNewThread {
                            for _ in 0..<n {
                                stream.write([UInt8](repeating: UInt8(ascii: "a") + UInt8(t), count: 100))
                                _ = stream.pendingBytes
                            }
                            group.leave()
                        }
                    }
                    group.notify(queue: .global()) { stream.finish() }
                })
        case "big":
            let n = Int(parts[1]) ?? 1000
            respond(
                .streaming(headers: headers) { stream in
                    recorder.didStart(request.path, stream)
                    stream.onClose { recorder.didClose() }
                    // Queued inline, on the I/O thread: must not block.
                    var left = n
                    while left > 0 {
                        let k = min(left, 64 * 1024)
                        stream.write([UInt8](repeating: UInt8(ascii: "s"), count: k))
                        left -= k
                    }
                    stream.finish()
                })
        default:
            EchoHandler().handle(request, respond: respond)
        }
    }
}

func makeStreamingServer(_ recorder: StreamRecorder) throws -> HTTPServer {
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    let server = HTTPServer(
        configuration: HTTPServerConfiguration(port: 0),
        handler: StreamingHandler(recorder: recorder), logger: logger)
    try server.start()
    return server
}

/// A minimal HTTP/2 client speaking raw frames, so a test controls flow
/// control per stream (command-line clients always grant window updates).
final class RawH2Client {
    let raw: RawClient
    private var buffer: [UInt8] = []

    struct Frame {
        var type: UInt8
        var flags: UInt8
        var stream: UInt32
        var payload: [UInt8]
    }

    init?(port: Int, initialWindow: UInt32) {
        guard let raw = RawClient(port: port) else { return nil }
        self.raw = raw
        var settings: [UInt8] = [0, 4]  // SETTINGS_INITIAL_WINDOW_SIZE
        settings += Self.be32(initialWindow)
        raw.send(
            Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
                + Self.frame(type: 4, flags: 0, stream: 0, settings)
                // A large connection window: only stream windows limit.
                + Self.frame(type: 8, flags: 0, stream: 0, Self.be32((1 << 30) - 65535)))
    }

    static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)]
    }

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags] + be32(stream) + payload
    }

    /// GET with END_STREAM. HPACK: indexed :method GET / :scheme http,
    /// literal-without-indexing values for :path and :authority.
    func get(stream: UInt32, path: String) {
        precondition(path.utf8.count < 127)
        var block: [UInt8] = [0x82, 0x86, 0x04, UInt8(path.utf8.count)] + Array(path.utf8)
        block += [0x01, 9] + Array("127.0.0.1".utf8)
        raw.send(Self.frame(type: 1, flags: 0x5, stream: stream, block))
    }

    func windowUpdate(stream: UInt32, _ increment: UInt32) {
        raw.send(Self.frame(type: 8, flags: 0, stream: stream, Self.be32(increment)))
    }

    func reset(stream: UInt32) {
        raw.send(Self.frame(type: 3, flags: 0, stream: stream, Self.be32(8)))  // CANCEL
    }

    /// Next frame, or nil on timeout / EOF. SETTINGS are acknowledged here.
    func readFrame(timeoutMs: Int) -> Frame? {
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if buffer.count >= 9 {
                let len = Int(buffer[0]) << 16 | Int(buffer[1]) << 8 | Int(buffer[2])
                if buffer.count >= 9 + len {
                    let f = Frame(
                        type: buffer[3], flags: buffer[4],
                        stream: UInt32(buffer[5] & 0x7f) << 24 | UInt32(buffer[6]) << 16
                            | UInt32(buffer[7]) << 8 | UInt32(buffer[8]),
                        payload: Array(buffer[9..<(9 + len)]))
                    buffer.removeFirst(9 + len)
                    if f.type == 4 && f.flags & 1 == 0 { raw.send(Self.frame(type: 4, flags: 1, stream: 0, [])) }
                    return f
                }
            }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            var pfd = pollfd(fd: raw.fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, Int32(max(1, left * 1000))) <= 0 { continue }
            let n = chunk.withUnsafeMutableBytes { recv(raw.fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            buffer += chunk[0..<n]
        }
    }
}

final class StreamingTests: XCTestCase {
    override func setUp() {
        // Streams of earlier tests are gone (checked there); start clean.
        _ = eventually(2) { LiveCount.responseStreams.value == 0 }
    }

    func testStreamedBodyArrivesInOrderBothVersions() throws {
        let recorder = StreamRecorder()
        let server = try makeStreamingServer(recorder)
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.boundPort)/frames/5/30"
        let expected = (0..<5).map { "frame-\($0)\n" }.joined()

        // HTTP/1.1: chunked, no content-length.
        let h1 = try runTool("curl", ["-s", "-i", url])
        let head = h1.stdout.components(separatedBy: "\r\n\r\n").first ?? ""
        XCTAssertTrue(head.hasPrefix("HTTP/1.1 200"), h1.stdout)
        XCTAssertTrue(head.lowercased().contains("transfer-encoding: chunked"), head)
        XCTAssertFalse(head.lowercased().contains("content-length"), head)
        XCTAssertTrue(h1.stdout.hasSuffix("\r\n\r\n" + expected), h1.stdout)

        let (c2, b2) = try curl(["--http2-prior-knowledge", url])
        XCTAssertEqual(c2, 200)
        XCTAssertEqual(b2, expected)

        // Finished streams end (onClose), refuse writes and are freed.
        XCTAssertTrue(eventually(2) { recorder.closed == 2 }, "closed \(recorder.closed)")
        do {
            let s = try XCTUnwrap(recorder.stream("/frames/5/30"))
            XCTAssertTrue(s.isClosed)
            XCTAssertFalse(s.write([1, 2, 3]))
            XCTAssertEqual(s.pendingBytes, 0)
            nonisolated(unsafe) var lateHandlerRan = false
            s.onClose { lateHandlerRan = true }  // already closed: runs at once
            XCTAssertTrue(lateHandlerRan)
        }
        recorder.forget()
        XCTAssertTrue(
            eventually(2) { LiveCount.responseStreams.value == 0 },
            "live streams \(LiveCount.responseStreams.value)")

        // A large streamed body on both versions (socket full → EAGAIN / suspend).
        for args in [["--limit-rate", "20M"], ["--http2-prior-knowledge", "--limit-rate", "20M"]] {
            let r = try runTool(
                "curl",
                ["-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"] + args
                    + ["http://127.0.0.1:\(server.boundPort)/big/3000000"])
            XCTAssertEqual(r.stdout, "200 3000000", args.description)
        }
        // Plain responses still work next to streams.
        let (c3, b3) = try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(server.boundPort)/plain"])
        XCTAssertEqual(c3, 200)
        XCTAssertEqual(b3, "GET /plain - h2 -\n")
    }

    func testClientDisconnectClosesNeverEndingStream() throws {
        let recorder = StreamRecorder()
        let server = try makeStreamingServer(recorder)
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.boundPort)/forever"
        for (i, args) in [[String](), ["--http2-prior-knowledge"]].enumerated() {
            // curl gives up after 0.4 s and closes its socket.
            let r = try runTool("curl", ["-s", "-o", "/dev/null", "--max-time", "0.4"] + args + [url])
            XCTAssertEqual(r.status, 28, "curl should time out")  // CURLE_OPERATION_TIMEDOUT
            let gone = Date()
            XCTAssertTrue(eventually(1.5) { recorder.closed == i + 1 }, "onClose not run for \(args)")
            XCTAssertLessThan(Date().timeIntervalSince(gone), 1.0, args.description)
        }
        // Killing the client outright (abortive close) on both versions.
        let h1 = try XCTUnwrap(RawClient(port: server.boundPort))
        h1.send(Array("GET /forever HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let h2 = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: 65535))
        h2.get(stream: 1, path: "/forever")
        XCTAssertTrue(eventually(2) { recorder.started == 4 })
        usleep(250_000)
        h1.setResetOnClose()
        h2.raw.setResetOnClose()
        Glibc.shutdown(h1.fd, Int32(SHUT_RDWR))
        Glibc.shutdown(h2.raw.fd, Int32(SHUT_RDWR))
        XCTAssertTrue(eventually(1.5) { recorder.closed == 4 }, "closed \(recorder.closed)")
        // A client that only half-closes (FIN, still reading) on HTTP/1.1:
        // MHD does not watch suspended connections; caught at the next write.
        let half = try XCTUnwrap(RawClient(port: server.boundPort))
        half.send(Array("GET /forever HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        XCTAssertTrue(eventually(2) { recorder.started == 5 })
        usleep(150_000)
        Glibc.shutdown(half.fd, Int32(SHUT_WR))
        XCTAssertTrue(eventually(1) { recorder.closed == 5 }, "closed \(recorder.closed)")
        recorder.forget()
        let (gone, _) = half.readUntilClosed(timeoutMs: 1000)
        XCTAssertTrue(gone)

        // RST_STREAM of one stream leaves the connection working.
        let c = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: 65535))
        c.get(stream: 1, path: "/forever")
        XCTAssertTrue(eventually(2) { recorder.started == 6 })
        c.reset(stream: 1)
        XCTAssertTrue(eventually(1.5) { recorder.closed == 6 }, "closed \(recorder.closed)")
        c.get(stream: 3, path: "/frames/2/1")
        var body: [UInt8] = []
        var ended = false
        while !ended, let f = c.readFrame(timeoutMs: 2000) {
            if f.type == 0 && f.stream == 3 {
                body += f.payload
                ended = f.flags & 1 != 0
            }
        }
        XCTAssertTrue(ended)
        XCTAssertEqual(String(decoding: body, as: UTF8.self), "frame-0\nframe-1\n")

        recorder.forget()
        XCTAssertTrue(
            eventually(2) { LiveCount.responseStreams.value == 0 },
            "live streams \(LiveCount.responseStreams.value)")
    }

    func testHeadersBeforeFirstWriteAndConcurrentWriters() throws {
        let recorder = StreamRecorder()
        let server = try makeStreamingServer(recorder)
        defer { server.stop() }
        // A stream that has not written yet has already sent its headers.
        let h1 = try XCTUnwrap(RawClient(port: server.boundPort))
        h1.send(Array("GET /silent HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let (_, head) = h1.readUntilClosed(timeoutMs: 400)
        XCTAssertTrue(
            String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 201"),
            String(decoding: head, as: UTF8.self))
        let h2 = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: 65535))
        h2.get(stream: 1, path: "/silent")
        var gotHeaders = false
        while !gotHeaders, let f = h2.readFrame(timeoutMs: 1000) {
            if f.type == 1 && f.stream == 1 {
                gotHeaders = true
                XCTAssertEqual(f.flags & 1, 0)
            }
        }
        XCTAssertTrue(gotHeaders)
        XCTAssertEqual(recorder.started, 2)
        XCTAssertEqual(recorder.closed, 0)

        // Many threads writing into one stream: nothing lost or torn.
        let url = "http://127.0.0.1:\(server.boundPort)/concurrent/2000"
        for args in [[String](), ["--http2-prior-knowledge"]] {
            let (code, body) = try curl(args + [url])
            XCTAssertEqual(code, 200)
            XCTAssertEqual(body.utf8.count, 4 * 2000 * 100, args.description)
            var counts: [UInt8: Int] = [:]
            for b in body.utf8 { counts[b, default: 0] += 1 }
            XCTAssertEqual(counts, [97: 200_000, 98: 200_000, 99: 200_000, 100: 200_000])
        }
        withExtendedLifetime((h1, h2)) {}
    }

    func testFiftyStreamsOnOneConnectionWithSlowReader() throws {
        let recorder = StreamRecorder()
        let server = try makeStreamingServer(recorder)
        defer { server.stop() }
        // h2load: 50 concurrent streaming requests on one connection.
        let h = try runTool(
            "h2load",
            [
                "-n", "100", "-c", "1", "-m", "50",
                "http://127.0.0.1:\(server.boundPort)/frames/3/20"
            ])
        XCTAssertTrue(h.stdout.contains("100 total, 100 started, 100 done, 100 succeeded"), h.stdout)

        // Raw client: stream 1 gets 5 MB but no WINDOW_UPDATE (a slow
        // reader); 49 other streams on the same connection must complete.
        let window: UInt32 = 32768
        let c = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: window))
        c.get(stream: 1, path: "/big/5000000")
        var fast: [UInt32: [UInt8]] = [:]
        var done: Set<UInt32> = []
        for i in 0..<49 {
            let id = UInt32(3 + 2 * i)
            fast[id] = []
            c.get(stream: id, path: "/frames/3/\(10 + i % 5)")
        }
        var slowBytes = 0
        var slowEnded = false
        while done.count < 49, let f = c.readFrame(timeoutMs: 3000) {
            XCTAssertNotEqual(f.type, 7, "GOAWAY")
            guard f.type == 0 else { continue }
            if f.stream == 1 {
                slowBytes += f.payload.count
                slowEnded = f.flags & 1 != 0
            } else {
                fast[f.stream, default: []] += f.payload
                if f.flags & 1 != 0 { done.insert(f.stream) }
            }
        }
        XCTAssertEqual(done.count, 49)
        for (id, body) in fast {
            XCTAssertEqual(String(decoding: body, as: UTF8.self), "frame-0\nframe-1\nframe-2\n", "stream \(id)")
        }
        // The slow stream got its window's worth; the rest waits, queued.
        XCTAssertEqual(slowBytes, Int(window))
        XCTAssertFalse(slowEnded)
        XCTAssertEqual(recorder.stream("/big/5000000")?.pendingBytes, 5_000_000 - Int(window))

        // WINDOW_UPDATE resumes it up to the end.
        c.windowUpdate(stream: 1, 10_000_000)
        while !slowEnded, let f = c.readFrame(timeoutMs: 3000) {
            if f.type == 0 && f.stream == 1 {
                slowBytes += f.payload.count
                slowEnded = f.flags & 1 != 0
            }
        }
        XCTAssertTrue(slowEnded)
        XCTAssertEqual(slowBytes, 5_000_000)
        XCTAssertTrue(eventually(2) { recorder.closed == recorder.started }, "\(recorder.closed)/\(recorder.started)")
        recorder.forget()
        XCTAssertTrue(
            eventually(2) { LiveCount.responseStreams.value == 0 },
            "live streams \(LiveCount.responseStreams.value)")
    }

    func testStopWithOpenStreams() throws {
        let recorder = StreamRecorder()
        let server = try makeStreamingServer(recorder)
        let port = server.boundPort
        let url = "http://127.0.0.1:\(port)/forever"
        let clients = DispatchGroup()
        let resultsLock = NSLock()
        nonisolated(unsafe) var results: [ProcessResult?] = [nil, nil]
        for (i, args) in [[String](), ["--http2-prior-knowledge"]].enumerated() {
            clients.enter()
            DispatchQueue.global().async {
                let r = try? runTool("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}"] + args + [url])
                resultsLock.withLock { results[i] = r }
                clients.leave()
            }
        }
        // Plus a slow reader that never reads, on each version.
        let h1 = try XCTUnwrap(RawClient(port: port))
        h1.send(Array("GET /big/5000000 HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let h2 = try XCTUnwrap(RawH2Client(port: port, initialWindow: 65535))
        h2.get(stream: 1, path: "/big/5000000")
        XCTAssertTrue(eventually(3) { recorder.started == 4 }, "started \(recorder.started)")
        usleep(300_000)
        do {
            let streams = ["/forever", "/big/5000000"].compactMap { recorder.stream($0) }
            let t0 = Date()
            server.stop()
            XCTAssertLessThan(Date().timeIntervalSince(t0), 2.0)
            XCTAssertTrue(eventually(1) { recorder.closed == 4 }, "closed \(recorder.closed)")
            for s in streams {
                XCTAssertTrue(s.isClosed)
                XCTAssertFalse(s.write([1]))
            }
        }
        // The never-ending streams were ended cleanly: curl saw a complete response.
        XCTAssertEqual(clients.wait(timeout: .now() + 3), .success)
        XCTAssertEqual(results[0]?.status, 0, "h1: \(String(describing: results[0]))")
        XCTAssertEqual(results[0]?.stdout, "200")
        XCTAssertEqual(results[1]?.status, 0, "h2: \(String(describing: results[1]))")
        XCTAssertEqual(results[1]?.stdout, "200")
        recorder.forget()
        XCTAssertTrue(
            eventually(2) { LiveCount.responseStreams.value == 0 },
            "live streams \(LiveCount.responseStreams.value)")
        XCTAssertTrue(eventually(2) { LiveCount.http2Connections.value == 0 })
    }
}
