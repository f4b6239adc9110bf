import XCTest
@testable import KVConnect
import KVEngine
import KVSQLite

/// Requests that once crashed the protocol layer (see Tests/Fuzz).
final class FuzzRegressionTests: XCTestCase {
    let codec = WireCodec()
    let now: Int64 = 1_700_000_000_000

    /// An enqueue deadline near Int64.min made `deadline_ms - nowMs`
    /// overflow and trap (found while writing fuzz-atomic-write). A deadline
    /// in the past is accepted (delivered at once); far future still refused.
    func testEnqueueDeadlineNearInt64MinDoesNotTrap() throws {
        for deadline in [Int64.min, Int64.min + 1, -1] {
            let body = Wire.atomicWrite(enqueues: [
                (payload: [0xFF, 0x0F, 0x5F], deadline: deadline, keys: [], backoff: [])
            ])
            let write = try codec.decodeAtomicWrite(body, nowMs: now)
            XCTAssertEqual(write.enqueues.map(\.deadlineMs), [deadline])
        }
        let far = Wire.atomicWrite(enqueues: [(payload: [1], deadline: Int64.max, keys: [], backoff: [])])
        XCTAssertThrowsError(try codec.decodeAtomicWrite(far, nowMs: now)) { error in
            XCTAssertTrue((error as? ProtocolError)?.message.contains("enqueue delay too long") == true)
        }
    }

    /// A sum operand whose bigint length is near Int.max (fuzz-v8) decodes as
    /// a request and is refused by the engine with a 400, not a crash.
    func testSumWithHugeBigIntLengthIsRefused() throws {
        let operand: [UInt8] = [0xFF, 0x10, 0x5A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x69, 0x69]
        let body = Wire.atomicWrite(mutations: [Wire.M(key: [0x02, 0x61, 0x00], type: .sum, value: operand)])
        let write = try codec.decodeAtomicWrite(body, nowMs: now)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "kvconnect-fuzzreg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(path: dir.appendingPathComponent("kv.sqlite3").path)
        defer { store.close() }
        XCTAssertThrowsError(try store.atomicWriteSync(write)) { error in
            guard let kv = error as? KVError else { return XCTFail("\(error)") }
            XCTAssertEqual(ProtocolError(kv).status, 400)
        }
    }
}
