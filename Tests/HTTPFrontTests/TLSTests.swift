import Foundation
import Glibc
import Logging
import XCTest
@testable import HTTPFront

/// A throw-away CA and a server certificate for 127.0.0.1/localhost it signed
/// (EC P-256, made with the openssl CLI).
struct TestPKI {
    let dir: String
    var caFile: String { dir + "/ca.pem" }
    var certFile: String { dir + "/server.pem" }
    var keyFile: String { dir + "/server.key" }

    init(name: String = "a") throws {
        dir = NSTemporaryDirectory() + "httpfront-tls-\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ext = dir + "/ext.cnf"
        try Data(
            """
            subjectAltName=IP:127.0.0.1,DNS:localhost
            basicConstraints=CA:FALSE
            keyUsage=digitalSignature,keyEncipherment
            extendedKeyUsage=serverAuth

            """.utf8
        ).write(to: URL(fileURLWithPath: ext))
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for args in [
            ["req", "-x509"] + ec + [
                "-keyout", dir + "/ca.key", "-out", caFile, "-days", "2",
                "-subj", "/CN=httpfront test CA \(name)"
            ],
            ["req"] + ec + ["-keyout", keyFile, "-out", dir + "/server.csr", "-subj", "/CN=localhost"],
            [
                "x509", "-req", "-in", dir + "/server.csr", "-CA", caFile, "-CAkey", dir + "/ca.key",
                "-CAcreateserial", "-out", certFile, "-days", "2", "-extfile", ext
            ]
        ] {
            let r = try runTool("openssl", args)
            guard r.status == 0 else {
                throw NSError(
                    domain: "openssl", code: Int(r.status),
                    userInfo: [NSLocalizedDescriptionKey: r.stderr])
            }
        }
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

func makeTLSServer(
    _ pki: TestPKI, handler: any HTTPRequestHandler = EchoHandler(),
    sniffTimeoutMs: Int = 2000, maxBodyBytes: Int = 1_048_576
) throws -> HTTPServer {
    var config = HTTPServerConfiguration(port: 0, maxBodyBytes: maxBodyBytes, sniffTimeoutMs: sniffTimeoutMs)
    config.tlsCertificateFile = pki.certFile
    config.tlsKeyFile = pki.keyFile
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    let server = HTTPServer(configuration: config, handler: handler, logger: logger)
    try server.start()
    return server
}

final class TLSTests: XCTestCase {
    nonisolated(unsafe) static var pki: TestPKI?

    /// One CA for the tests that do not replace it (openssl runs take time).
    func sharedPKI() throws -> TestPKI {
        if let p = TLSTests.pki { return p }
        let p = try TestPKI(name: "shared")
        TLSTests.pki = p
        return p
    }

    override class func tearDown() { pki?.remove() }

    private func assertNoLeaks(baseline: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(
            eventually(5) {
                LiveCount.tlsSessions.value == 0 && LiveCount.tlsBridges.value == 0
                    && LiveCount.http2Connections.value == 0 && LiveCount.mhdRequests.value == 0
                    && LiveCount.responseStreams.value == 0 && openFileDescriptorCount() <= baseline
            },
            "tls sessions \(LiveCount.tlsSessions.value), bridges \(LiveCount.tlsBridges.value), "
                + "h2 \(LiveCount.http2Connections.value), mhd requests \(LiveCount.mhdRequests.value), "
                + "streams \(LiveCount.responseStreams.value), fds \(openFileDescriptorCount()) vs \(baseline)",
            file: file, line: line)
    }

    func testHTTP1AndHTTP2OverTLS() throws {
        let pki = try sharedPKI()
        let baseline = openFileDescriptorCount()
        do {
            let server = try makeTLSServer(pki)
            defer { server.stop() }
            let base = "https://127.0.0.1:\(server.boundPort)"
            let file = try tempFile(bytes: 300_000, fill: UInt8(ascii: "q"))
            defer { try? FileManager.default.removeItem(atPath: file) }
            for (flag, tag) in [("--http1.1", "h1"), ("--http2", "h2")] {
                let (code, body) = try curl([
                    "--cacert", pki.caFile, flag, "-H", "X-Test: t",
                    "\(base)/echo?x=1"
                ])
                XCTAssertEqual(code, 200, flag)
                XCTAssertEqual(body, "GET /echo x=1 \(tag) t\n", flag)
                // Large upload and download: partial records, backpressure.
                let (c2, b2) = try curl([
                    "--cacert", pki.caFile, flag, "--data-binary", "@\(file)",
                    "\(base)/async/up"
                ])
                XCTAssertEqual(c2, 200, flag)
                XCTAssertEqual(b2, "POST /async/up - \(tag) -\n" + String(repeating: "q", count: 300_000), flag)
                let (c3, b3) = try curl(["--cacert", pki.caFile, flag, "\(base)/blob/900000"])
                XCTAssertEqual(c3, 200, flag)
                XCTAssertEqual(b3.count, 900_000, flag)
                // Keep-alive: several requests on one connection, and "localhost" SNI.
                let r = try runTool(
                    "curl",
                    [
                        "-s", "--cacert", pki.caFile, flag,
                        "https://localhost:\(server.boundPort)/a",
                        "https://localhost:\(server.boundPort)/async/b"
                    ])
                XCTAssertEqual(r.stdout, "GET /a - \(tag) -\nGET /async/b - \(tag) -\n", flag)
            }
            // ALPN result as curl sees it.
            let v1 = try runTool(
                "curl",
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_version}", "--cacert",
                    pki.caFile, "--http1.1", "\(base)/"
                ])
            XCTAssertEqual(v1.stdout, "1.1")
            let v2 = try runTool(
                "curl",
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_version}", "--cacert",
                    pki.caFile, "--http2", "\(base)/"
                ])
            XCTAssertEqual(v2.stdout, "2")
            // No ALPN at all → HTTP/1.1.
            let noALPN = try runTool(
                "sh",
                [
                    "-c",
                    "printf 'GET /noalpn HTTP/1.1\\r\\nHost: x\\r\\n"
                        + "Connection: close\\r\\n\\r\\n' | openssl s_client -quiet -CAfile \(pki.caFile) "
                        + "-connect 127.0.0.1:\(server.boundPort)"
                ])
            XCTAssertTrue(noALPN.stdout.hasPrefix("HTTP/1.1 200"), noALPN.stdout + noALPN.stderr)
            XCTAssertTrue(noALPN.stdout.hasSuffix("GET /noalpn - h1 -\n"), noALPN.stdout)
            // An untrusted certificate is refused by the client.
            let (bad, _) = try curl(["--http1.1", "\(base)/"])
            XCTAssertEqual(bad, 0)
        }
        assertNoLeaks(baseline: baseline)
    }

    func testOversizedBodyGets413OverTLS() throws {
        let pki = try sharedPKI()
        let baseline = openFileDescriptorCount()
        do {
            let server = try makeTLSServer(pki, maxBodyBytes: 1000)
            defer { server.stop() }
            let file = try tempFile(bytes: 2_000_000)
            defer { try? FileManager.default.removeItem(atPath: file) }
            let url = "https://127.0.0.1:\(server.boundPort)/big"
            let expected = "request body exceeds the limit of 1000 bytes"
            for extra in [["--http1.1"], ["--http2"], ["--http1.1", "-H", "Transfer-Encoding: chunked"]] {
                let (code, body) = try curl(
                    ["--cacert", pki.caFile, "-X", "POST", "--data-binary", "@\(file)"]
                        + extra + [url])
                XCTAssertEqual(code, 413, "\(extra)")
                XCTAssertEqual(body, expected, "\(extra)")
            }
        }
        assertNoLeaks(baseline: baseline)
    }

    func testStreamingOverTLS() throws {
        let pki = try sharedPKI()
        let baseline = openFileDescriptorCount()
        do {
            let recorder = StreamRecorder()
            let server = try makeTLSServer(pki, handler: StreamingHandler(recorder: recorder))
            defer { server.stop() }
            let base = "https://127.0.0.1:\(server.boundPort)"
            let expected = (0..<5).map { "frame-\($0)\n" }.joined()
            for flag in ["--http1.1", "--http2"] {
                let (code, body) = try curl(["--cacert", pki.caFile, flag, "\(base)/frames/5/30"])
                XCTAssertEqual(code, 200, flag)
                XCTAssertEqual(body, expected, flag)
                let (c2, b2) = try curl(["--cacert", pki.caFile, flag, "\(base)/big/1000000"])
                XCTAssertEqual(c2, 200, flag)
                XCTAssertEqual(b2.count, 1_000_000, flag)
                // A long-lived stream the client abandons: the producer learns it.
                let closedBefore = recorder.closed
                _ = try runTool("curl", ["-s", "--cacert", pki.caFile, flag, "-m", "0.5", "\(base)/forever"])
                XCTAssertTrue(
                    eventually(3) { recorder.closed > closedBefore + 0 && recorder.closed == recorder.started },
                    "\(flag): started \(recorder.started) closed \(recorder.closed)")
            }
            recorder.forget()
        }
        assertNoLeaks(baseline: baseline)
    }

    func testGarbagePlainAndStalledClientsAreClosed() throws {
        let pki = try sharedPKI()
        let baseline = openFileDescriptorCount()
        do {
            let server = try makeTLSServer(pki, sniffTimeoutMs: 300)
            defer { server.stop() }
            let port = server.boundPort
            // Plain HTTP/1.1 and h2c on the TLS port.
            for bytes in [
                Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), http2Preface,
                (0..<2000).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ 13) },
                // A TLS record header announcing a handshake, then junk.
                [0x16, 0x03, 0x01, 0x00, 0x40] + [UInt8](repeating: 0xff, count: 64)
            ] {
                let c = try XCTUnwrap(RawClient(port: port))
                c.send(bytes)
                let (closed, _) = c.readUntilClosed(timeoutMs: 3000)
                XCTAssertTrue(closed, "first byte \(bytes[0])")
            }
            // Silent and stalled-in-handshake clients hit the timeout.
            let silent = try XCTUnwrap(RawClient(port: port))
            let partial = try XCTUnwrap(RawClient(port: port))
            partial.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            XCTAssertTrue(silent.readUntilClosed(timeoutMs: 3000).0)
            XCTAssertTrue(partial.readUntilClosed(timeoutMs: 3000).0)
            // Still serving.
            for flag in ["--http1.1", "--http2"] {
                let (code, _) = try curl(["--cacert", pki.caFile, flag, "https://127.0.0.1:\(port)/ok"])
                XCTAssertEqual(code, 200, flag)
            }
        }
        assertNoLeaks(baseline: baseline)
    }

    func testReloadTLS() throws {
        let a = try TestPKI(name: "a"), b = try TestPKI(name: "b")
        defer {
            a.remove()
            b.remove()
        }
        // The server reads the files at a fixed path; start with A's.
        let live = try TestPKI(name: "live")
        defer { live.remove() }
        func install(_ p: TestPKI) throws {
            for (src, dst) in [(p.certFile, live.certFile), (p.keyFile, live.keyFile)] {
                try? FileManager.default.removeItem(atPath: dst)
                try FileManager.default.copyItem(atPath: src, toPath: dst)
            }
        }
        try install(a)
        let baseline = openFileDescriptorCount()
        do {
            let server = try makeTLSServer(live)
            defer { server.stop() }
            let url = "https://127.0.0.1:\(server.boundPort)/r"
            XCTAssertEqual(try curl(["--cacert", a.caFile, "--http1.1", url]).0, 200)
            XCTAssertEqual(try curl(["--cacert", b.caFile, "--http2", url]).0, 0)

            try install(b)
            try server.reloadTLS()
            for flag in ["--http1.1", "--http2"] {
                XCTAssertEqual(try curl(["--cacert", b.caFile, flag, url]).0, 200, flag)
                XCTAssertEqual(try curl(["--cacert", a.caFile, flag, url]).0, 0, flag)
            }

            // Broken key: throws, the old credentials (B) stay.
            try Data("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n".utf8)
                .write(to: URL(fileURLWithPath: live.keyFile))
            XCTAssertThrowsError(try server.reloadTLS()) { error in
                XCTAssertTrue("\(error)".contains(live.keyFile), "\(error)")
            }
            // A key that does not match the certificate.
            try FileManager.default.removeItem(atPath: live.keyFile)
            try FileManager.default.copyItem(atPath: a.keyFile, toPath: live.keyFile)
            XCTAssertThrowsError(try server.reloadTLS())
            // Missing file.
            try FileManager.default.removeItem(atPath: live.certFile)
            XCTAssertThrowsError(try server.reloadTLS()) { error in
                XCTAssertTrue("\(error)".contains("cannot read"), "\(error)")
            }
            for flag in ["--http1.1", "--http2"] {
                XCTAssertEqual(try curl(["--cacert", b.caFile, flag, url]).0, 200, flag)
            }
        }
        // A plain server has nothing to reload.
        let plain = try makeServer()
        XCTAssertThrowsError(try plain.reloadTLS())
        plain.stop()
        // A bad certificate at start fails start().
        var config = HTTPServerConfiguration(port: 0)
        config.tlsCertificateFile = "/nonexistent/cert.pem"
        config.tlsKeyFile = a.keyFile
        XCTAssertThrowsError(
            try HTTPServer(
                configuration: config, handler: EchoHandler(),
                logger: Logger(label: "test")
            ).start())
        assertNoLeaks(baseline: baseline)
    }
}
