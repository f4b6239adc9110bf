import Foundation
import Glibc
import Logging
import XCTest
@testable import HTTPFront

/// Many streams on one HTTP/2 connection: the stream limit is reported, and
/// floods are bounded by other means than a low limit (rapid reset, buffered
/// request bytes), while ordinary mass cancellation of answered streams (a
/// server dropping its watches) is not taken for a flood.
final class StreamFloodTests: XCTestCase {
    private func server(
        _ recorder: StreamRecorder,
        _ configure: (inout HTTPServerConfiguration) -> Void
    ) throws -> HTTPServer {
        var config = HTTPServerConfiguration(port: 0)
        configure(&config)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = HTTPServer(configuration: config, handler: StreamingHandler(recorder: recorder), logger: logger)
        try server.start()
        return server
    }

    /// Frames until `stop` says so or nothing arrives for `timeoutMs`.
    private func read(_ c: RawH2Client, timeoutMs: Int = 3000, until stop: (RawH2Client.Frame) -> Bool) -> [RawH2Client
        .Frame]
    {
        var frames: [RawH2Client.Frame] = []
        while let f = c.readFrame(timeoutMs: timeoutMs) {
            frames.append(f)
            if stop(f) { break }
        }
        return frames
    }

    private func goAwayCode(_ frames: [RawH2Client.Frame]) -> UInt32? {
        guard let g = frames.first(where: { $0.type == 7 }), g.payload.count >= 8 else { return nil }
        return g.payload[4..<8].reduce(0) { $0 << 8 | UInt32($1) }
    }

    func testRapidResetGetsGoAwayEnhanceYourCalm() throws {
        let recorder = StreamRecorder()
        let server = try server(recorder) {
            $0.earlyResetBurst = 50
            $0.earlyResetsPerSecond = 10
        }
        defer { server.stop() }
        let before = FrontStats.http2RapidResetCloses
        let c = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: 65535))
        // Each request is answered 30 ms later (/async): reset before that,
        // its work goes on while its stream slot is free again.
        for i in 0..<200 {
            let id = UInt32(2 * i + 1)
            c.get(stream: id, path: "/async/\(i)")
            c.reset(stream: id)
        }
        let frames = read(c) { $0.type == 7 }
        XCTAssertEqual(goAwayCode(frames), 0xb, "GOAWAY ENHANCE_YOUR_CALM expected: \(frames.map(\.type))")
        XCTAssertNil(c.readFrame(timeoutMs: 2000), "connection closed after the GOAWAY")
        XCTAssertEqual(FrontStats.http2RapidResetCloses, before + 1)
        // Other connections are served.
        let (code, _) = try curl(["--http2-prior-knowledge", "http://127.0.0.1:\(server.boundPort)/after"])
        XCTAssertEqual(code, 200)
    }

    func testResetsBelowTheRateAreServed() throws {
        let recorder = StreamRecorder()
        let server = try server(recorder) {
            $0.earlyResetBurst = 50
            $0.earlyResetsPerSecond = 10
        }
        defer { server.stop() }
        let c = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: 65535))
        for i in 0..<40 {
            c.get(stream: UInt32(2 * i + 1), path: "/async/\(i)")
            c.reset(stream: UInt32(2 * i + 1))
        }
        c.get(stream: 81, path: "/p")
        let frames = read(c) { $0.stream == 81 && $0.type == 0 && $0.flags & 1 != 0 }
        XCTAssertNil(goAwayCode(frames))
        XCTAssertTrue(frames.contains { $0.stream == 81 && $0.type == 1 }, "\(frames.map(\.type))")
    }

    func testCancellingThousandsOfAnsweredStreamsAtOnceIsNotAFlood() throws {
        // Defaults. nghttp2's own guard alone (1000 resets, then 33/s) would
        // end this connection with every stream on it.
        let recorder = StreamRecorder()
        let server = try server(recorder) { _ in }
        defer { server.stop() }
        let before = FrontStats.http2RapidResetCloses
        let c = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: 65535))
        let n = 3000
        for i in 0..<n { c.get(stream: UInt32(2 * i + 1), path: "/silent") }
        var answered = Set<UInt32>()
        _ = read(c) { f in
            if f.type == 1 { answered.insert(f.stream) }
            return answered.count == n || f.type == 7
        }
        XCTAssertEqual(answered.count, n)
        XCTAssertTrue(eventually(5) { recorder.started == n }, "\(recorder.started)")
        for i in 0..<n { c.reset(stream: UInt32(2 * i + 1)) }
        XCTAssertTrue(eventually(5) { recorder.closed == n }, "\(recorder.closed)")
        // Still the same connection: a new request is answered.
        let id = UInt32(2 * n + 1)
        c.get(stream: id, path: "/p")
        let frames = read(c) { $0.stream == id && $0.type == 0 && $0.flags & 1 != 0 }
        XCTAssertNil(goAwayCode(frames), "\(frames.map(\.type))")
        XCTAssertTrue(frames.contains { $0.stream == id && $0.type == 1 })
        XCTAssertEqual(FrontStats.http2RapidResetCloses, before)
        recorder.forget()
    }

    func testStreamLimitIsAnnouncedAndCountedOncePerConnection() throws {
        let recorder = StreamRecorder()
        let server = try server(recorder) { $0.maxConcurrentStreams = 10 }
        defer { server.stop() }
        let before = FrontStats.http2StreamLimitReached
        let c = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: 65535))
        let settings = read(c) { $0.type == 4 && $0.flags & 1 == 0 }.last
        // SETTINGS_MAX_CONCURRENT_STREAMS (3) = 10.
        let entries = stride(from: 0, to: settings?.payload.count ?? 0, by: 6).map { i -> (UInt16, UInt32) in
            let p = settings!.payload
            return (UInt16(p[i]) << 8 | UInt16(p[i + 1]), p[(i + 2)..<(i + 6)].reduce(0) { $0 << 8 | UInt32($1) })
        }
        XCTAssertTrue(entries.contains { $0 == (3, 10) }, "\(entries)")
        for i in 0..<9 { c.get(stream: UInt32(2 * i + 1), path: "/silent") }
        XCTAssertTrue(eventually(3) { recorder.started == 9 })
        XCTAssertEqual(FrontStats.http2StreamLimitReached, before)
        c.get(stream: 19, path: "/silent")
        XCTAssertTrue(eventually(3) { recorder.started == 10 })
        XCTAssertEqual(FrontStats.http2StreamLimitReached, before + 1)
        // Below and at the limit again: still counted once for this connection.
        c.reset(stream: 1)
        XCTAssertTrue(eventually(3) { recorder.closed == 1 })
        c.get(stream: 21, path: "/silent")
        XCTAssertTrue(eventually(3) { recorder.started == 11 })
        XCTAssertEqual(FrontStats.http2StreamLimitReached, before + 1)
        // A second connection reaching it counts again.
        let c2 = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: 65535))
        for i in 0..<10 { c2.get(stream: UInt32(2 * i + 1), path: "/silent") }
        XCTAssertTrue(eventually(3) { recorder.started == 21 })
        XCTAssertEqual(FrontStats.http2StreamLimitReached, before + 2)
        recorder.forget()
    }

    func testBufferedHeaderBytesPerConnectionAreBounded() throws {
        // Each stream's header block is within maxHeaderBytes, but open
        // streams that never finish their request must not add up without
        // bound now that a connection may hold 100,000 streams.
        let recorder = StreamRecorder()
        let server = try server(recorder) { $0.maxBufferedRequestBytesPerConnection = 20_000 }
        defer { server.stop() }
        let c = try XCTUnwrap(RawH2Client(port: server.boundPort, initialWindow: 65535))
        // POST /, then an 8000-byte literal field (not indexed), no END_STREAM.
        var block: [UInt8] = [0x83, 0x84, 0x86, 0x41, 0x01, 0x78, 0x00, 0x05] + Array("x-big".utf8)
        block += [0x7f, 0xc1, 0x3d] + [UInt8](repeating: 0x61, count: 8000)  // length 127 + 7873
        for id in [1, 3, 5] as [UInt32] { c.raw.send(RawH2Client.frame(type: 1, flags: 0x04, stream: id, block)) }
        let frames = read(c, timeoutMs: 1000) { $0.type == 3 }
        let resets = frames.filter { $0.type == 3 }
        XCTAssertEqual(resets.map(\.stream), [5], "\(frames.map { ($0.type, $0.stream) })")
        XCTAssertEqual(resets.first?.payload, [0, 0, 0, 0xb])
        // The first two finish normally (their bytes were accepted).
        for id in [1, 3] as [UInt32] { c.raw.send(RawH2Client.frame(type: 0, flags: 0x01, stream: id, [])) }
        var done = Set<UInt32>()
        _ = read(c) { f in
            if f.type == 1 { done.insert(f.stream) }
            return done.count == 2
        }
        XCTAssertEqual(done, [1, 3])
    }
}
