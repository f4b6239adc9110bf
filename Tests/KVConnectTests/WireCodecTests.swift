import XCTest
@testable import KVConnect
import KVEngine

final class WireCodecTests: XCTestCase {
    let codec = WireCodec()
    let now: Int64 = 1_700_000_000_000

    func expectError(
        _ status: Int, _ needle: String, _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line
    ) {
        do {
            try body()
            XCTFail("expected \(status) '\(needle)'", file: file, line: line)
        } catch let e as ProtocolError {
            XCTAssertEqual(e.status, status, e.message, file: file, line: line)
            XCTAssertTrue(e.message.contains(needle), "'\(e.message)' lacks '\(needle)'", file: file, line: line)
        } catch {
            XCTFail("unexpected \(error)", file: file, line: line)
        }
    }

    func testSnapshotReadDecodes() throws {
        let body = Wire.snapshotRead([([1], [2], 5, true), ([3], [4, 0], 1, false)])
        let ranges = try codec.decodeSnapshotRead(body)
        XCTAssertEqual(
            ranges,
            [
                ReadRange(start: [1], end: [2], limit: 5, reverse: true),
                ReadRange(start: [3], end: [4, 0], limit: 1, reverse: false)
            ])
        XCTAssertEqual(try codec.decodeSnapshotRead([]), [])
    }

    func testSnapshotReadLimits() {
        expectError(400, "not a valid SnapshotRead") { _ = try codec.decodeSnapshotRead([0xff, 0xff, 0xff]) }
        expectError(400, "too many read ranges") {
            _ = try codec.decodeSnapshotRead(Wire.snapshotRead(Array(repeating: ([1], [2], 1, false), count: 11)))
        }
        expectError(400, "too many entries") {
            _ = try codec.decodeSnapshotRead(Wire.snapshotRead([([1], [2], 1001, false)]))
        }
        expectError(400, "too many entries") {
            _ = try codec.decodeSnapshotRead(Wire.snapshotRead([([1], [2], 500, false), ([1], [2], 501, false)]))
        }
        expectError(400, "must be greater than 0") {
            _ = try codec.decodeSnapshotRead(Wire.snapshotRead([([1], [2], 0, false)]))
        }
        expectError(400, "must be greater than 0") {
            _ = try codec.decodeSnapshotRead(Wire.snapshotRead([([1], [2], -3, false)]))
        }
        expectError(400, "key too large") {
            _ = try codec.decodeSnapshotRead(Wire.snapshotRead([(Array(repeating: 1, count: 2050), [2], 1, false)]))
        }
        XCTAssertNoThrow(
            try codec.decodeSnapshotRead(Wire.snapshotRead([(Array(repeating: 1, count: 2049), [2], 1000, false)])))
    }

    func testAtomicWriteDecodesEveryMutationKind() throws {
        let body = Wire.atomicWrite(
            checks: [(stringKey("a"), []), (stringKey("b"), Array(repeating: 7, count: 10))],
            mutations: [
                .init(key: stringKey("s"), type: .set, value: [0xff, 0x0f, 0x49, 0x02], encoding: .v8, expireAtMs: 99),
                .init(key: stringKey("d"), type: .delete),
                .init(key: stringKey("n"), type: .sum, value: [1, 0, 0, 0, 0, 0, 0, 0], encoding: .le64),
                .init(key: stringKey("n"), type: .min, value: [1, 0, 0, 0, 0, 0, 0, 0], encoding: .le64),
                .init(key: stringKey("n"), type: .max, value: [1, 0, 0, 0, 0, 0, 0, 0], encoding: .le64),
                .init(key: stringKey("v"), type: .setSuffixVersionstampedKey, value: [9], encoding: .bytes)
            ],
            enqueues: [([0xff, 0x0f, 0x5f], now + 1000, [stringKey("dl")], [100, 200])])
        let w = try codec.decodeAtomicWrite(body, nowMs: now)
        XCTAssertEqual(
            w.checks,
            [
                Check(key: stringKey("a"), versionstamp: nil),
                Check(key: stringKey("b"), versionstamp: Array(repeating: 7, count: 10))
            ])
        XCTAssertEqual(w.mutations.count, 6)
        XCTAssertEqual(
            w.mutations[0],
            Mutation(
                key: stringKey("s"), kind: .set(KVValue(data: [0xff, 0x0f, 0x49, 0x02], encoding: .v8)), expireAtMs: 99)
        )
        XCTAssertEqual(w.mutations[1].kind, .delete)
        XCTAssertEqual(
            w.mutations[2].kind,
            .sum(KVValue(data: [1, 0, 0, 0, 0, 0, 0, 0], encoding: .le64), min: nil, max: nil, clamp: false))
        XCTAssertEqual(w.mutations[3].kind, .min(KVValue(data: [1, 0, 0, 0, 0, 0, 0, 0], encoding: .le64)))
        XCTAssertEqual(w.mutations[4].kind, .max(KVValue(data: [1, 0, 0, 0, 0, 0, 0, 0], encoding: .le64)))
        XCTAssertEqual(w.mutations[5].kind, .setSuffixVersionstampedKey(KVValue(data: [9], encoding: .bytes)))
        XCTAssertEqual(
            w.enqueues,
            [
                Enqueue(
                    payload: [0xff, 0x0f, 0x5f], deadlineMs: now + 1000, keysIfUndelivered: [stringKey("dl")],
                    backoffSchedule: [100, 200])
            ])
    }

    func testSumCarriesItsBoundsAndClamp() throws {
        let one: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0], lo = [UInt8](repeating: 0, count: 8)
        let hi: [UInt8] = [9, 0, 0, 0, 0, 0, 0, 0]
        let body = Wire.atomicWrite(mutations: [
            .init(key: stringKey("n"), type: .sum, value: one, encoding: .le64, sumMin: lo, sumMax: hi, sumClamp: true),
            .init(key: stringKey("m"), type: .sum, value: one, encoding: .le64, sumMax: hi)
        ])
        let w = try codec.decodeAtomicWrite(body, nowMs: now)
        XCTAssertEqual(
            w.mutations.map(\.kind),
            [
                .sum(KVValue(data: one, encoding: .le64), min: lo, max: hi, clamp: true),
                .sum(KVValue(data: one, encoding: .le64), min: nil, max: hi, clamp: false)
            ])
    }

    func testMutationErrorsNameTheWireType() {
        let cases: [(Wire.MutationType, String)] = [
            (.set, "set"), (.sum, "sum"), (.min, "min"), (.max, "max"),
            (.setSuffixVersionstampedKey, "setSuffixVersionstampedKey")
        ]
        for (type, name) in cases {
            expectError(400, "mutation 0 ('\(name)'): missing value") {
                _ = try codec.decodeAtomicWrite(Wire.atomicWrite(mutations: [.init(key: [1], type: type)]), nowMs: now)
            }
        }
        // A delete needs no value.
        XCTAssertNoThrow(
            try codec.decodeAtomicWrite(Wire.atomicWrite(mutations: [.init(key: [1], type: .delete)]), nowMs: now))
    }

    func testAtomicWriteLimits() {
        let v8: [UInt8] = [0xff, 0x0f, 0x49, 0x02]
        func w(_ m: [Wire.M]) -> [UInt8] { Wire.atomicWrite(mutations: m) }
        expectError(400, "not a valid AtomicWrite") { _ = try codec.decodeAtomicWrite([0x0a, 0xff], nowMs: now) }
        expectError(400, "too many checks") {
            _ = try codec.decodeAtomicWrite(
                Wire.atomicWrite(checks: (0..<101).map { (stringKey("\($0)"), []) }), nowMs: now)
        }
        XCTAssertNoThrow(
            try codec.decodeAtomicWrite(
                Wire.atomicWrite(checks: (0..<100).map { (stringKey("\($0)"), []) }), nowMs: now))
        expectError(400, "too many mutations and enqueues") {
            _ = try codec.decodeAtomicWrite(
                w((0..<1001).map { .init(key: stringKey("\($0)"), type: .delete) }), nowMs: now)
        }
        expectError(400, "too many mutations and enqueues") {
            _ = try codec.decodeAtomicWrite(
                Wire.atomicWrite(
                    mutations: (0..<999).map { .init(key: stringKey("\($0)"), type: .delete) },
                    enqueues: [(v8, now, [], []), (v8, now, [], [])]), nowMs: now)
        }
        expectError(400, "mutation key too large") {
            _ = try codec.decodeAtomicWrite(
                w([.init(key: Array(repeating: 1, count: 2049), type: .delete)]), nowMs: now)
        }
        expectError(400, "check key too large") {
            _ = try codec.decodeAtomicWrite(
                Wire.atomicWrite(checks: [(Array(repeating: 1, count: 2049), [])]), nowMs: now)
        }
        expectError(400, "empty") { _ = try codec.decodeAtomicWrite(w([.init(key: [], type: .delete)]), nowMs: now) }
        expectError(400, "value too large") {
            _ = try codec.decodeAtomicWrite(
                w([.init(key: [1], type: .set, value: Array(repeating: 0, count: 65537), encoding: .bytes)]), nowMs: now
            )
        }
        XCTAssertNoThrow(
            try codec.decodeAtomicWrite(
                w([.init(key: [1], type: .set, value: Array(repeating: 0, count: 65536), encoding: .bytes)]), nowMs: now
            ))
        expectError(400, "atomic write too large") {
            _ = try codec.decodeAtomicWrite(
                w(
                    (0..<13).map {
                        .init(
                            key: stringKey("\($0)"), type: .set, value: Array(repeating: 0, count: 65000),
                            encoding: .bytes)
                    }), nowMs: now)
        }
        // Numbers the proto does not define are sent as raw values.
        let encoding9 = Wire.ValueEncoding(rawValue: 9), type6 = Wire.MutationType(rawValue: 6)
        expectError(400, "unknown value encoding 0") {
            _ = try codec.decodeAtomicWrite(
                w([.init(key: [1], type: .set, value: [1], encoding: .unspecified)]), nowMs: now)
        }
        expectError(400, "unknown value encoding 9") {
            _ = try codec.decodeAtomicWrite(
                w([.init(key: [1], type: .set, value: [1], encoding: encoding9)]), nowMs: now)
        }
        expectError(400, "unknown mutation type 0") {
            _ = try codec.decodeAtomicWrite(w([.init(key: [1], type: .unspecified, value: [1])]), nowMs: now)
        }
        expectError(400, "unknown mutation type 6") {
            _ = try codec.decodeAtomicWrite(w([.init(key: [1], type: type6, value: [1])]), nowMs: now)
        }
        expectError(400, "missing value") {
            _ = try codec.decodeAtomicWrite(w([.init(key: [1], type: .set)]), nowMs: now)
        }
        expectError(400, "invalid check versionstamp") {
            _ = try codec.decodeAtomicWrite(Wire.atomicWrite(checks: [([1], [1, 2, 3])]), nowMs: now)
        }
        expectError(400, "enqueue delay too long") {
            _ = try codec.decodeAtomicWrite(
                Wire.atomicWrite(enqueues: [(v8, now + 31 * 86_400_000, [], [])]), nowMs: now)
        }
        XCTAssertNoThrow(
            try codec.decodeAtomicWrite(Wire.atomicWrite(enqueues: [(v8, now + 30 * 86_400_000, [], [])]), nowMs: now))
        expectError(400, "too many keys_if_undelivered") {
            _ = try codec.decodeAtomicWrite(
                Wire.atomicWrite(enqueues: [(v8, now, (0..<11).map { stringKey("\($0)") }, [])]), nowMs: now)
        }
        expectError(400, "backoff schedule too long") {
            _ = try codec.decodeAtomicWrite(
                Wire.atomicWrite(enqueues: [(v8, now, [], Array(repeating: 1, count: 11))]), nowMs: now)
        }
        expectError(400, "backoff delay too long") {
            _ = try codec.decodeAtomicWrite(Wire.atomicWrite(enqueues: [(v8, now, [], [3_600_001])]), nowMs: now)
        }
        expectError(400, "enqueue payload too large") {
            _ = try codec.decodeAtomicWrite(
                Wire.atomicWrite(enqueues: [(Array(repeating: 0, count: 65537), now, [], [])]), nowMs: now)
        }
    }

    func testOutputsRoundTrip() throws {
        let entries = [
            [
                KVEntry(
                    key: [1, 2], value: KVValue(data: [3], encoding: .bytes),
                    versionstamp: Array(repeating: 1, count: 10))
            ], []
        ]
        let out = try XCTUnwrap(Wire.decodeReadOutput(codec.encodeSnapshotReadOutput(entries)))
        XCTAssertEqual(out.ranges.count, 2)
        XCTAssertEqual(out.ranges[0][0].key, [1, 2])
        XCTAssertEqual(out.ranges[0][0].value, [3])
        XCTAssertTrue(out.ranges[1].isEmpty)
        XCTAssertTrue(out.strong)
        XCTAssertEqual(out.status, .success)

        let ok = try XCTUnwrap(
            Wire.decodeWriteOutput(
                codec.encodeAtomicWriteOutput(.committed(versionstamp: Array(repeating: 9, count: 10)))))
        XCTAssertEqual(ok.status, .success)
        XCTAssertEqual(ok.vs, Array(repeating: 9, count: 10))
        let failed = try XCTUnwrap(
            Wire.decodeWriteOutput(codec.encodeAtomicWriteOutput(.checkFailed(failedChecks: [0, 4]))))
        XCTAssertEqual(failed.status, .checkFailure)
        XCTAssertEqual(failed.failed, [0, 4])
    }
}
