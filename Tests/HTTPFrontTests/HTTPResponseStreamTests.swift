import XCTest

@testable import HTTPFront

/// The response stream's queue without a connection behind it.
final class HTTPResponseStreamTests: XCTestCase {
    private func read(_ stream: HTTPResponseStream, max: Int) -> (HTTPResponseStream.ReadResult, [UInt8]) {
        var buf = [UInt8](repeating: 0, count: max)
        let result = buf.withUnsafeMutableBytes { stream.read(into: $0.baseAddress!, max: max) }
        if case let .data(n, _) = result { return (result, Array(buf[..<n])) }
        return (result, [])
    }

    func testBytesComeOutInOrderAcrossChunksThenEOF() {
        let stream = HTTPResponseStream(transport: nil)
        XCTAssertEqual(read(stream, max: 8).0, .empty)
        XCTAssertTrue(stream.write(Array("hello ".utf8)))
        XCTAssertTrue(stream.write([]))
        XCTAssertTrue(stream.write(Array("world".utf8)))
        XCTAssertEqual(stream.pendingBytes, 11)
        let (first, a) = read(stream, max: 8)
        XCTAssertEqual(first, .data(8, eof: false))
        stream.finish()
        XCTAssertTrue(stream.isClosed)
        XCTAssertFalse(stream.write(Array("late".utf8)), "writes after finish are refused")
        let (second, b) = read(stream, max: 8)
        XCTAssertEqual(second, .data(3, eof: true))
        XCTAssertEqual(String(decoding: a + b, as: UTF8.self), "hello world")
        XCTAssertEqual(stream.pendingBytes, 0)
    }

    func testHandlersRunOnceWhenTheTransportEnds() {
        let stream = HTTPResponseStream(transport: nil)
        let runs = LiveCount()
        stream.onClose { runs.add(1) }
        stream.onClose { runs.add(1) }
        XCTAssertTrue(stream.write([1, 2, 3]))
        stream.transportEnded()
        stream.transportEnded()
        XCTAssertEqual(runs.value, 2)
        XCTAssertEqual(stream.pendingBytes, 0, "the queue is dropped")
        XCTAssertEqual(read(stream, max: 4).0, .ended)
        XCTAssertFalse(stream.write([4]))
        stream.onClose { runs.add(10) }  // already ended: runs at once
        XCTAssertEqual(runs.value, 12)
    }

    func testStartClosedHandsOverAnEndedStream() {
        let ended = LiveCount()
        HTTPResponseStream.startClosed { stream in
            XCTAssertTrue(stream.isClosed)
            XCTAssertFalse(stream.write([1]))
            stream.onClose { ended.add(1) }
        }
        XCTAssertEqual(ended.value, 1)
    }
}
