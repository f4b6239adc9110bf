import CDatapath
import Foundation
import Logging
import XCTest
@testable import KVConnect
import KVEngine

/// A stream that records frames, as the HTTP front would send them.
final class RecordingStream: ResponseStreamWriter, @unchecked Sendable {
    private let lock = NSLock()
    private var data: [UInt8] = []
    private var closeHandlers: [@Sendable () -> Void] = []
    private var _closed = false
    private var _pendingOverride = 0
    /// Simulated unsent bytes (a slow reader); set from the test thread.
    var pendingOverride: Int {
        get {
            lock.lock()
            defer { lock.unlock() }
            return _pendingOverride
        }
        set {
            lock.lock()
            _pendingOverride = newValue
            lock.unlock()
        }
    }

    func write(_ bytes: [UInt8]) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if _closed { return false }
        data += bytes
        return true
    }
    func finish() { closeNow() }
    var pendingBytes: Int { pendingOverride }
    var isClosed: Bool {
        lock.lock()
        defer { lock.unlock() }
        return _closed
    }
    func onClose(_ handler: @escaping @Sendable () -> Void) {
        lock.lock()
        if _closed {
            lock.unlock()
            handler()
            return
        }
        closeHandlers.append(handler)
        lock.unlock()
    }
    /// The client goes away.
    func closeNow() {
        lock.lock()
        if _closed {
            lock.unlock()
            return
        }
        _closed = true
        let hs = closeHandlers
        closeHandlers = []
        lock.unlock()
        for h in hs { h() }
    }

    /// Frames so far: nil entries for pings; each frame = per key (value bytes or nil).
    var frames: [[[UInt8]?]?] {
        lock.lock()
        let d = data
        lock.unlock()
        var out: [[[UInt8]?]?] = []
        var i = 0
        while i + 4 <= d.count {
            let n = Int(d[i]) | Int(d[i + 1]) << 8 | Int(d[i + 2]) << 16 | Int(d[i + 3]) << 24
            i += 4
            if n == 0 {
                out.append(nil)
                continue
            }
            let payload = Array(d[i..<i + n])
            i += n
            let m = payload.withUnsafeBufferPointer {
                com__deno__kv__datapath__watch_output__unpack(nil, $0.count, $0.baseAddress)
            }!
            var keys: [[UInt8]?] = []
            for k in 0..<m.pointee.n_keys {
                let o = m.pointee.keys[k]!.pointee
                precondition(o.changed != 0, "every key is reported changed")
                keys.append(o.entry_if_changed.map { Wire.bytes($0.pointee.value) })
            }
            com__deno__kv__datapath__watch_output__free_unpacked(m, nil)
            out.append(keys)
        }
        return out
    }
    var dataFrames: [[[UInt8]?]] { frames.compactMap { $0 } }
}

final class WatchTests: ServiceTestCase {
    var token: String!

    override func configure(_ config: inout ServiceConfiguration) {
        config.watchPingIntervalMs = 100
    }

    override func setUpWithError() throws {
        try super.setUpWithError()
        token = signer.sign(DataPlaneToken(databaseId: store.databaseId, expiresAtMs: Int64.max))
    }

    func open(_ keys: [[UInt8]]) throws -> RecordingStream {
        nonisolated(unsafe) var response: ProtocolResponse?
        service.handle(
            ProtocolRequest(
                method: "POST", path: "/v2/watch", headers: [("authorization", "Bearer \(token!)")],
                body: Wire.watch(keys))
        ) { response = $0 }
        let r = try XCTUnwrap(response)
        XCTAssertEqual(r.status, 200, String(decoding: r.body, as: UTF8.self))
        let s = RecordingStream()
        try XCTUnwrap(r.stream)(s)
        return s
    }

    func set(_ key: String, _ v: String) throws {
        _ = try store.atomicWriteSync(
            AtomicWrite(mutations: [
                Mutation(key: stringKey(key), kind: .set(KVValue(data: Array(v.utf8), encoding: .bytes)))
            ]))
    }

    func eventually(_ what: String, _ cond: () -> Bool) {
        let end = Date().addingTimeInterval(5)
        while Date() < end {
            if cond() { return }
            usleep(5_000)
        }
        XCTFail("timed out waiting for \(what)")
    }

    func testFirstFrameThenChangesThenDelete() throws {
        try set("a", "1")
        let s = try open([stringKey("a"), stringKey("b")])
        eventually("first frame") { s.dataFrames.count == 1 }
        XCTAssertEqual(s.dataFrames[0], [Array("1".utf8), nil])
        try set("b", "2")
        eventually("second frame") { s.dataFrames.count == 2 }
        XCTAssertEqual(s.dataFrames[1], [Array("1".utf8), Array("2".utf8)])
        _ = try store.atomicWriteSync(AtomicWrite(mutations: [Mutation(key: stringKey("a"), kind: .delete)]))
        eventually("delete frame") { s.dataFrames.count == 3 }
        XCTAssertEqual(s.dataFrames[2], [nil, Array("2".utf8)])
        try set("unrelated", "x")
        usleep(150_000)
        XCTAssertEqual(s.dataFrames.count, 3, "unrelated commits send nothing")
        s.closeNow()
    }

    func testPingsAndCleanupWhenTheClientLeaves() throws {
        let s = try open([stringKey("p")])
        eventually("pings") { s.frames.filter { $0 == nil }.count >= 2 }
        XCTAssertEqual(store.watchCount, 1)
        s.closeNow()
        eventually("registration released") { store.watchCount == 0 }
    }

    func testRapidCommitsCollapseToConsistentFrames() throws {
        let s = try open([stringKey("x"), stringKey("y")])
        eventually("first") { s.dataFrames.count == 1 }
        for i in 0..<200 {
            _ = try store.atomicWriteSync(
                AtomicWrite(mutations: [
                    Mutation(key: stringKey("x"), kind: .set(KVValue(data: Array("\(i)".utf8), encoding: .bytes))),
                    Mutation(key: stringKey("y"), kind: .set(KVValue(data: Array("\(i)".utf8), encoding: .bytes)))
                ]))
        }
        eventually("final value") { s.dataFrames.last == [Array("199".utf8), Array("199".utf8)] }
        for f in s.dataFrames.dropFirst() { XCTAssertEqual(f[0], f[1], "each frame is one snapshot") }
        XCTAssertLessThanOrEqual(s.dataFrames.count, 201)
        s.closeNow()
    }

    func testSlowReaderHoldsFramesUntilItCatchesUp() throws {
        let s = try open([stringKey("slow")])
        eventually("first") { s.dataFrames.count == 1 }
        s.pendingOverride = WatchSession.slowReaderBytes + 1
        try set("slow", "1")
        try set("slow", "2")
        usleep(150_000)
        XCTAssertEqual(s.dataFrames.count, 1)
        s.pendingOverride = 0
        eventually("catch-up frame with the latest value") { s.dataFrames.last == [Array("2".utf8)] }
        s.closeNow()
    }

    func testWatchRequestErrors() throws {
        func status(_ body: [UInt8], auth: Bool = true) -> (Int, String) {
            nonisolated(unsafe) var response: ProtocolResponse?
            service.handle(
                ProtocolRequest(
                    method: "POST", path: "/v2/watch",
                    headers: auth ? [("authorization", "Bearer \(token!)")] : [], body: body)
            ) { response = $0 }
            return (response!.status, String(decoding: response!.body, as: UTF8.self))
        }
        let eleven = (0..<11).map { stringKey("k\($0)") }
        let (st, text) = status(Wire.watch(eleven))
        XCTAssertEqual(st, 400)
        XCTAssertTrue(text.contains("too many watched keys") && text.contains("10"), text)
        XCTAssertEqual(status(Wire.watch((0..<10).map { stringKey("k\($0)") })).0, 200)
        XCTAssertEqual(status(Wire.watch([])).0, 400)
        XCTAssertEqual(status([0xff, 0xff]).0, 400)
        XCTAssertEqual(status(Wire.watch([stringKey("a")]), auth: false).0, 401)
        XCTAssertEqual(status(Wire.watch([Array(repeating: 1, count: 2050)])).0, 400)
    }
}
