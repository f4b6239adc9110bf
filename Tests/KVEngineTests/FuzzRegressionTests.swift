import Foundation
import XCTest
@testable import KVEngine
@testable import KVSQLite

/// Inputs the fuzzers (Tests/Fuzz) found; each once crashed or broke a
/// round-trip property. The hex is the artifact libFuzzer wrote.
final class FuzzRegressionTests: XCTestCase {
    static func hex(_ s: String) -> Bytes {
        var out: Bytes = []
        var it = s.filter { !$0.isWhitespace }.makeIterator()
        while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
        return out
    }

    /// fuzz-v8: a bigint whose byte length is near Int.max made
    /// `i + byteLength` overflow and trap (a sum operand crashed the daemon).
    func testDecodeScalarHugeBigIntLength() throws {
        let crash = Self.hex("ff105affffffffffffffffff6969696969696969696969696969696969690000ed00")
        XCTAssertNil(V8Codec.decodeScalar(crash))
        XCTAssertNil(
            V8Codec.decodeScalar([0xFF, 0x0F, 0x5A, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
        XCTAssertNil(V8Value.decode(crash))

        // And through the engine: the sum is refused, nothing is written.
        let tmp = TempDB()
        let store = try tmp.open()
        defer { store.close() }
        let write = AtomicWrite(mutations: [
            Mutation(
                key: [0x02, 0x61, 0x00],
                kind: .sum(KVValue(data: crash, encoding: .v8), min: nil, max: nil, clamp: false))
        ])
        XCTAssertThrowsError(try store.atomicWriteSync(write)) { error in
            XCTAssertEqual(error as? KVError, .invalidMutation(SumMessages.invalidV8Parameters))
        }
    }

    private func roundTrip(
        key: Bytes = [0x02, 0x66, 0x00], value: Bytes, encoding: ValueEncoding = .v8,
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let entry = ExportedEntry(
            key: key, value: value, encoding: Int64(encoding.rawValue),
            versionstamp: Bytes(repeating: 0, count: 9) + [1], expiresAtMs: nil)
        let text = ExportFormat.line(for: entry)
        XCTAssertEqual(try ExportFormat.parse(line: text), entry, text, file: file, line: line)
    }

    /// fuzz-v8: `FF 67 30` (null with header version 0x67) was exported as
    /// `null` and imported as `FF 10 30`. Other header versions export raw.
    func testExportKeepsV8HeaderVersion() throws {
        try roundTrip(value: [0xFF, 0x67, 0x30])
        try roundTrip(value: [0xFF, 0x0F, 0x49, 0x54])  // what node:v8 serialize writes for 42
        XCTAssertEqual(ExportFormat.valueJSON([0xFF, 0x10, 0x49, 0x54], encoding: 1).0.serialized, "42")
    }

    /// fuzz-key: a NaN key part with a non-canonical payload was exported as
    /// "NaN" and imported as the canonical NaN; same for V8 numbers and Dates.
    func testExportKeepsNaNPayloads() throws {
        let key = Self.hex("2100020a2716002263")
        try roundTrip(key: key, value: [1], encoding: .bytes)
        XCTAssertNotNil(ExportFormat.keyJSON(key)["rawKey"])
        try roundTrip(key: KeyCodec.encode([.number(.nan)]), value: [1], encoding: .bytes)
        XCTAssertNil(ExportFormat.keyJSON(KeyCodec.encode([.number(.nan)]))["rawKey"])
        let oddNaN = Double(bitPattern: 0x7FF8_0000_0000_0001)
        for tag: UInt8 in [0x4E, 0x44] {  // Number, Date
            var v: Bytes = [0xFF, 0x10, tag]
            for k in 0..<8 { v.append(UInt8(truncatingIfNeeded: oddNaN.bitPattern >> (8 * UInt64(k)))) }
            try roundTrip(value: v)
        }
    }

    /// fuzz-atomic-write (LeakSanitizer): a closed store was never freed: the
    /// writer, sweeper and queue threads' closures held their owners.
    func testClosedStoreIsFreed() throws {
        let tmp = TempDB()
        weak var core: StoreCore?
        weak var sweeper: ExpirySweeper?
        weak var queue: QueueDispatcher?
        do {
            let store = try tmp.open()
            core = store.core
            sweeper = store.core.sweeper
            queue = store.core.queue
            _ = try store.atomicWriteSync(
                AtomicWrite(mutations: [
                    Mutation(key: [0x02, 0x61, 0x00], kind: .set(KVValue(data: [1], encoding: .bytes)))
                ]))
            store.close()
        }
        let deadline = Date().addingTimeInterval(5)
        while (core != nil || sweeper != nil || queue != nil) && Date() < deadline { usleep(10_000) }
        XCTAssertNil(core, "StoreCore leaked")
        XCTAssertNil(sweeper, "ExpirySweeper leaked")
        XCTAssertNil(queue, "QueueDispatcher leaked")
    }
}
