import Foundation
import Glibc
import XCTest
@testable import HTTPFront

final class HTTPServerTests: XCTestCase {
    func testHTTP1EchoPost() throws {
        let server = try makeServer()
        defer { server.stop() }
        let file = try tempFile(bytes: 0)
        try Data("hello world".utf8).write(to: URL(fileURLWithPath: file))
        let (code, body) = try curl([
            "-X", "POST", "-H", "X-Test: yes", "--data-binary", "@\(file)",
            "http://127.0.0.1:\(server.boundPort)/echo/a?x=1&y=2"
        ])
        XCTAssertEqual(code, 200)
        XCTAssertEqual(body, "POST /echo/a x=1&y=2 h1 yes\nhello world")
    }

    func testHTTP2EchoPost() throws {
        let server = try makeServer()
        defer { server.stop() }
        let file = try tempFile(bytes: 100_000, fill: UInt8(ascii: "z"))
        let (code, body) = try curl([
            "--http2-prior-knowledge", "-X", "POST", "-H", "X-Test: two",
            "--data-binary", "@\(file)",
            "http://127.0.0.1:\(server.boundPort)/v2/snapshot_read?q"
        ])
        XCTAssertEqual(code, 200)
        XCTAssertEqual(body, "POST /v2/snapshot_read q h2 two\n" + String(repeating: "z", count: 100_000))
    }

    func testHTTP2GetWithoutBody() throws {
        let server = try makeServer()
        defer { server.stop() }
        let (code, body) = try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(server.boundPort)/"])
        XCTAssertEqual(code, 200)
        XCTAssertEqual(body, "GET / - h2 -\n")
    }

    func testAsyncResponsesBothVersions() throws {
        let server = try makeServer()
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.boundPort)/async?n=1"
        let (c1, b1) = try curl(["-X", "POST", "--data-binary", "one", url])
        XCTAssertEqual(c1, 200)
        XCTAssertEqual(b1, "POST /async n=1 h1 -\none")
        let (c2, b2) = try curl(["--http2-prior-knowledge", "-X", "POST", "--data-binary", "two", url])
        XCTAssertEqual(c2, 200)
        XCTAssertEqual(b2, "POST /async n=1 h2 -\ntwo")
    }

    func testHTTP1KeepAliveSeveralRequests() throws {
        let server = try makeServer()
        defer { server.stop() }
        let base = "http://127.0.0.1:\(server.boundPort)"
        // One curl process reuses its connection for consecutive URLs.
        let r = try runTool("curl", ["-s", "\(base)/a", "\(base)/async/b", "\(base)/c"])
        XCTAssertEqual(r.stdout, "GET /a - h1 -\nGET /async/b - h1 -\nGET /c - h1 -\n")
    }

    func testManyParallelHTTP2StreamsOnOneConnection() throws {
        let server = try makeServer()
        defer { server.stop() }
        let r = try runTool("h2load", ["-n", "200", "-c", "1", "-m", "50", "http://127.0.0.1:\(server.boundPort)/x"])
        XCTAssertTrue(r.stdout.contains("200 total, 200 started, 200 done, 200 succeeded"), r.stdout)
        // Async answers complete out of order across streams.
        let a = try runTool(
            "h2load", ["-n", "200", "-c", "1", "-m", "100", "http://127.0.0.1:\(server.boundPort)/async"])
        XCTAssertTrue(a.stdout.contains("200 succeeded"), a.stdout)
    }

    func testManyConnectionsBothVersions() throws {
        let server = try makeServer()
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.boundPort)/x"
        let h2 = try runTool("h2load", ["-n", "1000", "-c", "500", "-m", "2", url], timeout: 20)
        XCTAssertTrue(h2.stdout.contains("1000 succeeded"), h2.stdout + h2.stderr)
        let h1 = try runTool("h2load", ["--h1", "-n", "1000", "-c", "500", url], timeout: 20)
        XCTAssertTrue(h1.stdout.contains("1000 succeeded"), h1.stdout + h1.stderr)
    }

    func testOversizedBodyGets413() throws {
        let server = try makeServer { $0.maxBodyBytes = 1000 }
        defer { server.stop() }
        let file = try tempFile(bytes: 50_000)
        let url = "http://127.0.0.1:\(server.boundPort)/big"
        let expected = "request body exceeds the limit of 1000 bytes"
        let (c1, b1) = try curl(["-X", "POST", "--data-binary", "@\(file)", url])
        XCTAssertEqual(c1, 413)
        XCTAssertEqual(b1, expected)
        let (c2, b2) = try curl(["--http2-prior-knowledge", "-X", "POST", "--data-binary", "@\(file)", url])
        XCTAssertEqual(c2, 413)
        XCTAssertEqual(b2, expected)
        // Without Content-Length (chunked upload) the limit applies to received bytes.
        let (c3, b3) = try curl(["-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", "@\(file)", url])
        XCTAssertEqual(c3, 413)
        XCTAssertEqual(b3, expected)
        // At the limit is fine.
        let ok = try tempFile(bytes: 1000)
        let (c4, _) = try curl(["--http2-prior-knowledge", "-X", "POST", "--data-binary", "@\(ok)", url])
        XCTAssertEqual(c4, 200)
        let (c5, _) = try curl(["-X", "POST", "--data-binary", "@\(ok)", url])
        XCTAssertEqual(c5, 200)
    }

    func testSilentAndGarbageClientsAreClosed() throws {
        let server = try makeServer { $0.sniffTimeoutMs = 300 }
        defer { server.stop() }
        let silent = try XCTUnwrap(RawClient(port: server.boundPort))
        let garbage = try XCTUnwrap(RawClient(port: server.boundPort))
        garbage.send(Array("\u{01}\u{02}garbage garbage\r\n\r\n".utf8))
        let partialPreface = try XCTUnwrap(RawClient(port: server.boundPort))
        partialPreface.send(Array("PRI * HTTP/2".utf8))

        let (closed1, _) = silent.readUntilClosed(timeoutMs: 2000)
        XCTAssertTrue(closed1, "silent client not closed")
        let (closed2, reply) = garbage.readUntilClosed(timeoutMs: 2000)
        XCTAssertTrue(closed2, "garbage client not closed")
        XCTAssertTrue(
            String(decoding: reply, as: UTF8.self).hasPrefix("HTTP/1.1 400"),
            String(decoding: reply, as: UTF8.self))
        let (closed3, _) = partialPreface.readUntilClosed(timeoutMs: 2000)
        XCTAssertTrue(closed3, "partial preface client not closed")

        let (code, _) = try curl(["http://127.0.0.1:\(server.boundPort)/still-alive"])
        XCTAssertEqual(code, 200)
        let (code2, _) = try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(server.boundPort)/still-alive"])
        XCTAssertEqual(code2, 200)
    }

    func testPrefaceThenGarbageGetsGoawayAndClose() throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try XCTUnwrap(RawClient(port: server.boundPort))
        client.send(Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + Array(repeating: 0xEE, count: 200))
        let (closed, bytes) = client.readUntilClosed(timeoutMs: 2000)
        XCTAssertTrue(closed)
        // Our SETTINGS (type 0x4) then a GOAWAY (type 0x7) somewhere in the reply.
        var types: [UInt8] = []
        var i = 0
        while i + 9 <= bytes.count {
            let len = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            types.append(bytes[i + 3])
            i += 9 + len
        }
        XCTAssertTrue(types.contains(0x7), "no GOAWAY in \(types)")
        let (code, _) = try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(server.boundPort)/"])
        XCTAssertEqual(code, 200)
    }

    func testClientGoneBeforeAsyncResponse() throws {
        let server = try makeServer()
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.boundPort)/async-slow"
        _ = try curl(["--max-time", "0.1", url])
        _ = try curl(["--http2-prior-knowledge", "--max-time", "0.1", url])
        usleep(500_000)  // the late respond() calls land on dead connections
        let (c1, _) = try curl([url])
        XCTAssertEqual(c1, 200)
        let (c2, _) = try curl(["--http2-prior-knowledge", url])
        XCTAssertEqual(c2, 200)
    }

    func testStopWithPendingRequestsAndPortIsFreed() throws {
        let server = try makeServer()
        let port = server.boundPort
        // A request still waiting for its (slow) response while we stop.
        let pending = DispatchGroup()
        nonisolated(unsafe) var http1Status = 0
        pending.enter()
        DispatchQueue.global().async {
            http1Status = (try? curl(["http://127.0.0.1:\(port)/async-slow"]))?.0 ?? -1
            pending.leave()
        }
        pending.enter()
        DispatchQueue.global().async {
            _ = try? curl(["--http2-prior-knowledge", "http://127.0.0.1:\(port)/async-slow"])
            pending.leave()
        }
        usleep(150_000)
        let start = Date()
        server.stop()
        server.stop()  // idempotent
        XCTAssertLessThan(Date().timeIntervalSince(start), 2)
        XCTAssertNil(RawClient(port: port), "still accepting after stop")
        XCTAssertEqual(pending.wait(timeout: .now() + 3), .success)
        // The suspended HTTP/1.1 request was answered rather than dropped.
        XCTAssertEqual(http1Status, 503)

        let again = try makeServer { $0.port = port }
        defer { again.stop() }
        XCTAssertEqual(again.boundPort, port)
        let (code, _) = try curl(["http://127.0.0.1:\(port)/"])
        XCTAssertEqual(code, 200)
    }

    func testAbusiveClientsLeakNothing() throws {
        let server = try makeServer {
            $0.sniffTimeoutMs = 300
            $0.idleTimeoutSeconds = 1
            $0.maxBodyBytes = 200_000
        }
        defer { server.stop() }
        let port = server.boundPort
        _ = try curl(["http://127.0.0.1:\(port)/warm-up"])  // Foundation's Process keeps some sockets
        let baseline = openFileDescriptorCount()
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        let payloads: [[UInt8]] = [
            [],
            Array("GET / HTTP/1.1\r\nHost: x\r\n".utf8),
            Array("POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\nabc".utf8),
            preface,
            preface + [0, 0],
            preface + (0..<100).map { UInt8($0) },
            Array("PRI * HTTP/2.0\r\n".utf8),
            Array("GET /async HTTP/1.1\r\nHost: x\r\n\r\n".utf8),
            Array("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".utf8),
            Array("\r\n\r\n\r\n".utf8),
            (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        ]
        var keep: [RawClient] = []
        for i in 0..<330 {
            guard let c = RawClient(port: port) else { continue }
            c.send(payloads[i % payloads.count])
            if i % 3 == 0 { c.setResetOnClose() }
            if i % 2 == 0 { keep.append(c) }  // others close right away (deinit)
        }
        usleep(100_000)
        keep.removeAll()
        // Clients vanishing mid-upload on both versions.
        let big = try tempFile(bytes: 150_000)
        let url = "http://127.0.0.1:\(port)/async"
        _ = try curl(["--limit-rate", "100k", "--max-time", "0.3", "-X", "POST", "--data-binary", "@\(big)", url])
        _ = try curl([
            "--http2-prior-knowledge", "--limit-rate", "100k", "--max-time", "0.3",
            "-X", "POST", "--data-binary", "@\(big)", url
        ])

        let (code, _) = try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(port)/alive"])
        XCTAssertEqual(code, 200)
        // Every socket and per-request object is eventually released.
        XCTAssertTrue(
            eventually(4) {
                openFileDescriptorCount() <= baseline
                    && LiveCount.mhdRequests.value == 0 && LiveCount.http2Connections.value == 0
            },
            "fds \(openFileDescriptorCount()) vs \(baseline), mhd requests \(LiveCount.mhdRequests.value), "
                + "h2 connections \(LiveCount.http2Connections.value) "
                + ((try? runTool("ss", ["-tanpi"]).stdout) ?? "").split(separator: "\n").filter {
                    $0.contains("pid=\(getpid()),")
                }.joined(separator: "\n"))
        let (code2, _) = try curl(["http://127.0.0.1:\(port)/alive"])
        XCTAssertEqual(code2, 200)
    }

    func testLargeResponsesToSlowReaders() throws {
        let server = try makeServer()
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.boundPort)/blob/3000000"
        // The client reads slower than we write: the socket fills up (EAGAIN)
        // and, on HTTP/2, the client's flow-control window runs out.
        for args in [["--limit-rate", "8M"], ["--http2-prior-knowledge", "--limit-rate", "8M"]] {
            let r = try runTool("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"] + args + [url])
            XCTAssertEqual(r.stdout, "200 3000000", args.description)
        }
        // Many large responses interleaved on one HTTP/2 connection.
        let h = try runTool(
            "h2load",
            [
                "-n", "40", "-c", "1", "-m", "20",
                "http://127.0.0.1:\(server.boundPort)/blob/200000"
            ])
        XCTAssertTrue(h.stdout.contains("40 succeeded"), h.stdout)
    }
}
