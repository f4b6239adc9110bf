import Foundation
import Glibc
import XCTest
@testable import HTTPFront

/// Connection limits, request timeouts and header limits against hostile
/// clients, with a normal client measured alongside.
final class HostileClientTests: XCTestCase {

    // MARK: helpers

    /// Connects from `source` (any 127.x address works on Linux loopback), so
    /// tests can play a second client IP.
    static func connect(port: Int, source: String? = nil) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if fd < 0 { return nil }
        if let source {
            var src = sockaddr_in()
            src.sin_family = sa_family_t(AF_INET)
            src.sin_addr.s_addr = inet_addr(source)
            _ = withUnsafePointer(to: &src) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 {
            Glibc.close(fd)
            return nil
        }
        return fd
    }

    /// One HTTP/1.1 GET on a new connection: status (0 = closed without an
    /// answer) and milliseconds taken.
    static func get(
        port: Int, path: String = "/ping", source: String? = "127.0.0.2",
        timeoutMs: Int = 5000
    ) -> (Int, Double) {
        let start = Date()
        guard let fd = connect(port: port, source: source) else { return (0, 0) }
        defer { Glibc.close(fd) }
        let req = Array("GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
        _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        let deadline = start.addingTimeInterval(Double(timeoutMs) / 1000)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 50) <= 0 { continue }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            got += buf[0..<n]
        }
        let text = String(decoding: got, as: UTF8.self)
        let status = text.hasPrefix("HTTP/1.1 ") ? Int(text.dropFirst(9).prefix(3)) ?? 0 : 0
        return (status, Date().timeIntervalSince(start) * 1000)
    }

    /// A normal client issuing GETs back to back in the background until
    /// stopped; reports latencies (ms) and failures.
    final class Prober: @unchecked Sendable {
        private let lock = NSLock()
        private var stopFlag = false
        private(set) var latencies: [Double] = []
        private(set) var failures = 0
        private let done = DispatchSemaphore(value: 0)

        init(port: Int) {
            Thread.detachNewThread { [self] in
                while !lock.withLock({ stopFlag }) {
                    let (status, ms) = HostileClientTests.get(port: port)
                    lock.withLock {
                        if status == 200 { latencies.append(ms) } else { failures += 1 }
                    }
                    usleep(10_000)
                }
                done.signal()
            }
        }

        /// Stops and returns (count, p50, p99, max, failures).
        func finish(_ label: String) -> (count: Int, p99: Double, failures: Int) {
            lock.withLock { stopFlag = true }
            done.wait()
            let sorted = lock.withLock { latencies.sorted() }
            func pct(_ p: Double) -> Double {
                sorted.isEmpty ? .infinity : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
            }
            print(
                String(
                    format: "[latency] %@: n=%d p50=%.1fms p99=%.1fms max=%.1fms failures=%d",
                    label, sorted.count, pct(0.5), pct(0.99), sorted.last ?? 0, failures))
            return (sorted.count, pct(0.99), failures)
        }
    }

    private func assertHealthy(
        _ p: (count: Int, p99: Double, failures: Int), file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertGreaterThan(p.count, 0, "normal client got nothing", file: file, line: line)
        XCTAssertEqual(p.failures, 0, "normal client failed", file: file, line: line)
        XCTAssertLessThan(p.p99, 1000, "normal client too slow", file: file, line: line)
    }

    // MARK: connection limits

    func testPerIPLimitRefusesExtraConnectionsOthersServed() throws {
        let server = try makeServer {
            $0.maxConnectionsPerIP = 3
            $0.sniffTimeoutMs = 10_000
        }
        defer { server.stop() }
        let port = server.boundPort
        // Three connections from 127.0.0.1 hold their slots (one mid-request in MHD).
        var holders: [RawClient] = []
        for i in 0..<3 {
            let c = try XCTUnwrap(RawClient(port: port))
            if i == 0 { c.send(Array("GET / HTTP/1.1\r\nHost: x\r\n".utf8)) }
            holders.append(c)
        }
        XCTAssertTrue(eventually(2) { server.limiter.openConnections == 3 })
        // The fourth from the same IP is refused at once.
        let extra = try XCTUnwrap(RawClient(port: port))
        let start = Date()
        let (closed, reply) = extra.readUntilClosed(timeoutMs: 2000)
        XCTAssertTrue(closed, "over-limit connection not closed")
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.5)
        let text = String(decoding: reply, as: UTF8.self)
        XCTAssertTrue(text.isEmpty || text.hasPrefix("HTTP/1.1 503"), text)
        if !text.isEmpty { XCTAssertTrue(text.contains("Retry-After: 1"), text) }
        XCTAssertGreaterThanOrEqual(server.limiter.refused.perIP, 1)
        // Another IP is served normally.
        let (status, _) = Self.get(port: port, source: "127.0.0.2")
        XCTAssertEqual(status, 200)
        // Freeing a slot lets 127.0.0.1 in again.
        holders.removeFirst()
        XCTAssertTrue(eventually(2) { server.limiter.openConnections(from: Self.loopback) < 3 })
        let (again, _) = Self.get(port: port, source: nil)
        XCTAssertEqual(again, 200)
        holders.removeAll()
        XCTAssertTrue(
            eventually(2) { server.limiter.openConnections == 0 }, "slots leaked: \(server.limiter.openConnections)")
    }

    static var loopback: sockaddr_storage {
        var ss = sockaddr_storage()
        withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                $0.pointee.sin_family = sa_family_t(AF_INET)
                $0.pointee.sin_addr.s_addr = inet_addr("127.0.0.1")
            }
        }
        return ss
    }

    func testTotalLimitAndSlotsReleasedOnEveryPath() throws {
        let server = try makeServer {
            $0.maxConnections = 4
            $0.sniffTimeoutMs = 10_000
        }
        defer { server.stop() }
        let port = server.boundPort
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        // Four holders on different paths: sniffing, HTTP/1.1, HTTP/2, HTTP/1.1 mid-body.
        let payloads: [[UInt8]] = [
            [], Array("GET / HTTP/1.1\r\n".utf8), preface,
            Array("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab".utf8)
        ]
        var holders: [RawClient] = []
        for p in payloads {
            let c = try XCTUnwrap(RawClient(port: port))
            c.send(p)
            holders.append(c)
        }
        XCTAssertTrue(eventually(2) { server.limiter.openConnections == 4 })
        let (status, ms) = Self.get(port: port, source: "127.0.0.3")
        XCTAssertTrue(status == 503 || status == 0, "over the total limit: \(status)")
        XCTAssertLessThan(ms, 500)
        holders.removeAll()  // closes all four
        XCTAssertTrue(
            eventually(3) { server.limiter.openConnections == 0 }, "slots leaked: \(server.limiter.openConnections)")
        XCTAssertEqual(Self.get(port: port).0, 200)
        let (h2, _) = try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(port)/x"])
        XCTAssertEqual(h2, 200)
        XCTAssertTrue(eventually(3) { server.limiter.openConnections == 0 })
    }

    // MARK: slowloris and request timeouts

    func testSlowlorisHeadersClosedWithin408WhileOthersServedFast() throws {
        let server = try makeServer { $0.requestTimeoutSeconds = 1 }
        defer { server.stop() }
        let port = server.boundPort
        let prober = Prober(port: port)
        // Several slowloris clients, one header byte every 100 ms.
        let group = DispatchGroup()
        nonisolated(unsafe) var results: [(Bool, String, Double)] = []
        let lock = NSLock()
        for _ in 0..<5 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                guard let c = RawClient(port: port) else { return }
                let start = Date()
                let bytes = Array(
                    "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                        .utf8)
                var closed = false
                var reply: [UInt8] = []
                for b in bytes {
                    c.send([b])
                    var pfd = pollfd(fd: c.fd, events: Int16(POLLIN), revents: 0)
                    if poll(&pfd, 1, 100) > 0 {
                        let (cl, r) = c.readUntilClosed(timeoutMs: 1000)
                        closed = cl
                        reply = r
                        break
                    }
                }
                lock.withLock {
                    results.append((closed, String(decoding: reply, as: UTF8.self), Date().timeIntervalSince(start)))
                }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 15), .success)
        let p = prober.finish("HTTP/1.1 slowloris x5 (1 byte / 100 ms, 1 s timeout)")
        assertHealthy(p)
        XCTAssertEqual(results.count, 5)
        for (closed, reply, seconds) in results {
            XCTAssertTrue(closed, "slowloris not closed")
            XCTAssertTrue(reply.isEmpty || reply.hasPrefix("HTTP/1.1 408"), reply)
            XCTAssertGreaterThan(seconds, 0.8)
            XCTAssertLessThan(seconds, 2.5)
        }
    }

    func testSlowBodyBothVersionsGets408() throws {
        let server = try makeServer { $0.requestTimeoutSeconds = 1 }
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.boundPort)/upload"
        let file = try tempFile(bytes: 200)
        for extra in [[String](), ["--http2-prior-knowledge"]] {
            let start = Date()
            // 20 bytes/s: the 200-byte body would take 10 s.
            let (code, body) = try curl(
                extra + ["--limit-rate", "20", "-X", "POST", "--data-binary", "@\(file)", url],
                timeout: 8)
            let took = Date().timeIntervalSince(start)
            XCTAssertTrue(code == 408 || code == 0, "\(extra): \(code) \(body)")
            XCTAssertLessThan(took, 4, "\(extra)")
        }
        XCTAssertEqual(Self.get(port: server.boundPort).0, 200)
    }

    func testHTTP2SlowHeaderBlockClosesConnection() throws {
        let server = try makeServer { $0.requestTimeoutSeconds = 1 }
        defer { server.stop() }
        let c = try XCTUnwrap(RawClient(port: server.boundPort))
        // Preface, empty SETTINGS, then a HEADERS frame without END_HEADERS
        // (its CONTINUATION never comes).
        var bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]
        let block: [UInt8] = [0x82, 0x84, 0x86]  // :method GET, :path /, :scheme http (static table)
        bytes += [0, 0, UInt8(block.count), 1, 0, 0, 0, 0, 1] + block
        c.send(bytes)
        let start = Date()
        let (closed, _) = c.readUntilClosed(timeoutMs: 4000)
        XCTAssertTrue(closed)
        XCTAssertLessThan(Date().timeIntervalSince(start), 3)
    }

    func testIdleKeepAliveNotCutByRequestTimeout() throws {
        let server = try makeServer {
            $0.requestTimeoutSeconds = 1
            $0.idleTimeoutSeconds = 5
        }
        defer { server.stop() }
        let c = try XCTUnwrap(RawClient(port: server.boundPort))
        c.send(Array("GET /a HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        usleep(2_000_000)  // idle longer than the request timeout
        c.send(Array("GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        let (closed, reply) = c.readUntilClosed(timeoutMs: 3000)
        XCTAssertTrue(closed)
        let text = String(decoding: reply, as: UTF8.self)
        XCTAssertTrue(text.contains("GET /a - h1") && text.contains("GET /b - h1"), text)
        XCTAssertFalse(text.contains("408"), text)
    }

    // MARK: headers

    func testTenThousandHeadersBothVersions() throws {
        let server = try makeServer()
        defer { server.stop() }
        let port = server.boundPort
        let prober = Prober(port: port)
        var req = "GET /many HTTP/1.1\r\nHost: x\r\n"
        for i in 0..<10_000 { req += "X-H\(i): v\(i)\r\n" }
        req += "\r\n"
        let c = try XCTUnwrap(RawClient(port: port))
        c.send(Array(req.utf8))
        let (closed, reply) = c.readUntilClosed(timeoutMs: 3000)
        let text = String(decoding: reply, as: UTF8.self)
        XCTAssertTrue(closed)
        XCTAssertTrue(
            text.isEmpty || text.hasPrefix("HTTP/1.1 431") || text.hasPrefix("HTTP/1.1 413"),
            String(text.prefix(200)))
        print("[hostile] HTTP/1.1 10000 headers → \(text.split(separator: "\r\n").first ?? "closed")")

        // HTTP/2 (curl's nghttp2 refuses to send a block over 64 KiB itself,
        // so 2500 literal fields here; 10000 as raw frames below).
        let path = NSTemporaryDirectory() + "headers-\(UUID().uuidString)"
        try (0..<2500).map { "x-h\($0): v\($0)" }.joined(separator: "\n").write(
            toFile: path, atomically: true, encoding: .utf8)
        let (code, _) = try curl(["--http2-prior-knowledge", "-H", "@\(path)", "http://127.0.0.1:\(port)/many"])
        print("[hostile] HTTP/2 2500 headers (curl) → \(code)")
        XCTAssertEqual(code, 431)
        // HPACK bomb: 10000 one-byte references to a static-table field
        // (accept-encoding: gzip, deflate) in one 10 KB HEADERS frame.
        let raw = try XCTUnwrap(RawClient(port: port))
        let block: [UInt8] = [0x82, 0x84, 0x86, 0x41, 0x01, 0x78] + [UInt8](repeating: 0x90, count: 10_000)
        let len = block.count
        raw.send(
            Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]
                + [UInt8(len >> 16), UInt8((len >> 8) & 0xff), UInt8(len & 0xff), 1, 0x05, 0, 0, 0, 1] + block)
        usleep(300_000)
        raw.send([0, 0, 8, 7, 0, 0, 0, 0, 0] + [0, 0, 0, 1, 0, 0, 0, 0])  // GOAWAY: we are done
        let (_, frames) = raw.readUntilClosed(timeoutMs: 2000)
        // A response HEADERS frame on stream 1 (the 431; its :status is
        // HPACK/Huffman-coded) and no connection error.
        var frameTypes: [(UInt8, UInt32)] = []
        var i = 0
        while i + 9 <= frames.count {
            let flen = Int(frames[i]) << 16 | Int(frames[i + 1]) << 8 | Int(frames[i + 2])
            let sid =
                UInt32(frames[i + 5] & 0x7f) << 24 | UInt32(frames[i + 6]) << 16 | UInt32(frames[i + 7]) << 8
                | UInt32(frames[i + 8])
            frameTypes.append((frames[i + 3], sid))
            if frames[i + 3] == 3 && i + 13 <= frames.count {
                print("[hostile] RST_STREAM error code \(frames[i + 12])")
            }
            i += 9 + flen
        }
        // Either the 431 (HEADERS) or a stream reset by nghttp2.
        let answered = frameTypes.contains { $0.0 == 1 && $0.1 == 1 }
        print("[hostile] HTTP/2 10000 headers (HPACK bomb) → frames \(frameTypes.map { "\($0.0)/\($0.1)" })")
        XCTAssertTrue(answered, "no response HEADERS or RST_STREAM on stream 1")
        // Within the limit still works.
        let (ok, _) = try curl(["--http2-prior-knowledge", "-H", "x-a: b", "http://127.0.0.1:\(port)/few"])
        XCTAssertEqual(ok, 200)
        assertHealthy(prober.finish("10000 headers h1+h2"))
    }

    func testHeaderLimitIsConfigurable() throws {
        let server = try makeServer { $0.maxHeaderBytes = 4096 }
        defer { server.stop() }
        let big = String(repeating: "v", count: 12_000)
        let url = "http://127.0.0.1:\(server.boundPort)/h"
        let (h1, _) = try curl(["-H", "x-big: \(big)", url])
        XCTAssertEqual(h1, 431)
        let (h1b, _) = try curl(["-H", "x-big: \(String(repeating: "v", count: 5000))", url])
        XCTAssertEqual(h1b, 431)
        let (h2, _) = try curl(["--http2-prior-knowledge", "-H", "x-big: \(big)", url])
        XCTAssertEqual(h2, 431)
        let (small, _) = try curl(["-H", "x-small: \(String(repeating: "v", count: 1000))", url])
        XCTAssertEqual(small, 200)
    }

    // MARK: pipelining and floods

    func testPipelinedRequestsAnsweredInOrder() throws {
        let server = try makeServer()
        defer { server.stop() }
        let c = try XCTUnwrap(RawClient(port: server.boundPort))
        var all = ""
        for i in 0..<20 {
            let path = i % 3 == 0 ? "/async/\(i)" : "/p/\(i)"
            all +=
                i % 2 == 0
                ? "GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n"
                : "POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nb\(i % 10)z"
        }
        all += "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        c.send(Array(all.utf8))
        let (closed, reply) = c.readUntilClosed(timeoutMs: 5000)
        XCTAssertTrue(closed)
        let text = String(decoding: reply, as: UTF8.self)
        var order: [String] = []
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        where line.hasPrefix("GET ") || line.hasPrefix("POST ") {
            order.append(String(line.split(separator: " ")[1]))
        }
        let expected = (0..<20).map { $0 % 3 == 0 ? "/async/\($0)" : "/p/\($0)" } + ["/last"]
        XCTAssertEqual(order, expected)
    }

    func testHTTP2StreamAndHeaderFlood() throws {
        let server = try makeServer { $0.maxHeaderBytes = 8192 }
        defer { server.stop() }
        let port = server.boundPort
        let prober = Prober(port: port)
        let url = "http://127.0.0.1:\(port)/flood"
        // Many concurrent streams on few connections.
        let r = try runTool("h2load", ["-n", "4000", "-c", "4", "-m", "1000", url], timeout: 30)
        XCTAssertTrue(r.stdout.contains("4000 succeeded"), r.stdout)
        // Every request with an oversized header block: 431 each, connection kept.
        let big = String(repeating: "h", count: 9000)
        let f = try runTool("h2load", ["-n", "500", "-c", "2", "-m", "100", "-H", "x-big: \(big)", url], timeout: 30)
        XCTAssertTrue(f.stdout.contains("500 done"), f.stdout)
        XCTAssertTrue(f.stdout.contains("0 2xx") || f.stdout.contains("status codes: 0 2xx"), f.stdout)
        let p = prober.finish("HTTP/2 flood (4000 streams, m=1000; 500 x 431)")
        assertHealthy(p)
        XCTAssertTrue(eventually(3) { server.limiter.openConnections == 0 })
    }

    func testManyConnectionsAtTheTotalLimit() throws {
        let server = try makeServer {
            $0.maxConnections = 300
            $0.maxConnectionsPerIP = 1000
            $0.sniffTimeoutMs = 5000
        }
        defer { server.stop() }
        let port = server.boundPort
        var holders: [RawClient] = []
        for _ in 0..<400 {
            if let c = RawClient(port: port) { holders.append(c) }
        }
        XCTAssertTrue(eventually(3) { server.limiter.openConnections == 300 }, "\(server.limiter.openConnections)")
        XCTAssertTrue(eventually(3) { server.limiter.refused.total >= 100 }, "\(server.limiter.refused)")
        holders.removeAll()
        XCTAssertTrue(eventually(3) { server.limiter.openConnections == 0 })
        XCTAssertEqual(Self.get(port: port).0, 200)
    }
    func testHTTP2BufferedBodiesPerConnectionAreBounded() throws {
        let server = try makeServer {
            $0.maxBodyBytes = 100_000
            $0.maxBufferedRequestBytesPerConnection = 100_000
        }
        defer { server.stop() }
        let c = try XCTUnwrap(RawClient(port: server.boundPort))
        func frame(_ type: UInt8, _ flags: UInt8, _ stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
            let n = payload.count
            return [
                UInt8(n >> 16), UInt8((n >> 8) & 0xff), UInt8(n & 0xff), type, flags,
                UInt8(stream >> 24), UInt8((stream >> 16) & 0xff), UInt8((stream >> 8) & 0xff), UInt8(stream & 0xff)
            ] + payload
        }
        var out = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + frame(4, 0, 0, [])
        // :method POST (0x83), :path / (0x84), :scheme http (0x86), :authority x
        let block: [UInt8] = [0x83, 0x84, 0x86, 0x41, 0x01, 0x78]
        for id in [1, 3, 5] as [UInt32] {
            out += frame(1, 0x04, id, block)  // END_HEADERS, body follows
            // 60 KB each (< the 64 KiB default window).
            for _ in 0..<4 { out += frame(0, 0, id, [UInt8](repeating: 0x61, count: 15_000)) }
        }
        c.send(out)
        usleep(300_000)
        c.send(frame(7, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0]))
        let (_, reply) = c.readUntilClosed(timeoutMs: 2000)
        var resets: [(UInt32, UInt8)] = []
        var i = 0
        while i + 9 <= reply.count {
            let len = Int(reply[i]) << 16 | Int(reply[i + 1]) << 8 | Int(reply[i + 2])
            let sid =
                UInt32(reply[i + 5] & 0x7f) << 24 | UInt32(reply[i + 6]) << 16 | UInt32(reply[i + 7]) << 8
                | UInt32(reply[i + 8])
            if reply[i + 3] == 3 && i + 13 <= reply.count { resets.append((sid, reply[i + 12])) }
            i += 9 + len
        }
        // One 60 KB body fits in 100 KB; the next two are reset with ENHANCE_YOUR_CALM (0xb).
        XCTAssertEqual(resets.map { $0.0 }, [3, 5], "\(resets)")
        XCTAssertEqual(resets.first?.1, 0xb)
        let (code, _) = try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(server.boundPort)/after"])
        XCTAssertEqual(code, 200)
    }
}
