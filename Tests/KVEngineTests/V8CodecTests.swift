import XCTest
@testable import KVEngine
@testable import KVSQLite

final class V8CodecTests: XCTestCase {
    func testNumberRoundTrip() {
        for d in [0.0, -0.0, 1, -1, 0.5, -2.25, 1e300, -1e-300, 9007199254740991, .infinity, -.infinity] {
            let enc = V8Codec.encode(.number(d))
            XCTAssertEqual(Array(enc.prefix(3)), [0xFF, 0x0F, 0x4E])
            XCTAssertEqual(enc.count, 11)
            XCTAssertEqual(V8Codec.decodeScalar(enc), .number(d))
        }
        if case .number(let n)? = V8Codec.decodeScalar(V8Codec.encode(.number(.nan))) {
            XCTAssertTrue(n.isNaN)
        } else {
            XCTFail()
        }
        // 1.5 = 0x3FF8000000000000
        XCTAssertEqual(V8Codec.encode(.number(1.5)), [0xFF, 0x0F, 0x4E, 0, 0, 0, 0, 0, 0, 0xF8, 0x3F])
    }

    func testInt32AndUint32Decode() {
        // zigzag: 0→0, -1→1, 1→2, -2→3
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x49, 0x00]), .number(0))
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x49, 0x01]), .number(-1))
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x49, 0x02]), .number(1))
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x49, 0x54]), .number(42))
        // 300 → zigzag 600 = 0xD8 0x04
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x49, 0xD8, 0x04]), .number(300))
        // int32 min: zigzag 0xFFFFFFFF
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x49, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), .number(-2147483648))
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x49, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F]), .number(2147483647))
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x55, 0x7F]), .number(127))
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x55, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), .number(4294967295))
    }

    func testHeaderVariants() {
        // Older versions and padding bytes after the header.
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0D, 0x00, 0x00, 0x49, 0x02]), .number(1))
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x00, 0x55, 0x05]), .number(5))
    }

    func testNonScalarsAndMalformed() {
        XCTAssertNil(V8Codec.decodeScalar([]))
        XCTAssertNil(V8Codec.decodeScalar([0xFF, 0x0F]))
        XCTAssertNil(V8Codec.decodeScalar([0xFF, 0x0F, 0x22, 0x01, 0x61]))  // one-byte string "a"
        XCTAssertNil(V8Codec.decodeScalar([0xFF, 0x0F, 0x54]))  // true
        XCTAssertNil(V8Codec.decodeScalar([0xFF, 0x0F, 0x5F]))  // undefined
        XCTAssertNil(V8Codec.decodeScalar([0xFF, 0x0F, 0x4E, 0, 0, 0]))  // truncated double
        XCTAssertNil(V8Codec.decodeScalar([0xFF, 0x0F, 0x5A, 0x10, 1, 2]))  // truncated bigint
        XCTAssertNil(V8Codec.decodeScalar([0xFF, 0x0F, 0x49, 0x80]))  // truncated varint
    }

    func testBigIntRoundTrip() {
        // Zero: bitfield 0, no bytes.
        XCTAssertEqual(V8Codec.encode(.bigint(.zero)), [0xFF, 0x0F, 0x5A, 0x00])
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x5A, 0x00]), .bigint(.zero))
        // 1n: bitfield 16 (8 bytes, positive)
        XCTAssertEqual(V8Codec.encode(.bigint(BigIntValue(1))), [0xFF, 0x0F, 0x5A, 0x10, 1, 0, 0, 0, 0, 0, 0, 0])
        // -1n: bitfield 17
        XCTAssertEqual(V8Codec.encode(.bigint(BigIntValue(-1))), [0xFF, 0x0F, 0x5A, 0x11, 1, 0, 0, 0, 0, 0, 0, 0])
        // 2^64 + 1: two words, bitfield 32
        let big = BigIntValue(negative: false, magnitude: [1, 1])
        XCTAssertEqual(
            V8Codec.encode(.bigint(big)),
            [0xFF, 0x0F, 0x5A, 0x20, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        for v in [
            BigIntValue(0), BigIntValue(42), BigIntValue(-42), BigIntValue(Int64.min), BigIntValue(Int64.max),
            BigIntValue(uint64: UInt64.max), big, -big,
            BigIntValue(negative: true, magnitude: [0, 0, 0, 0x8000_0000_0000_0000])
        ] {
            XCTAssertEqual(V8Codec.decodeScalar(V8Codec.encode(.bigint(v))), .bigint(v), "\(v)")
        }
        // A non-multiple-of-8 byte length is accepted on decode.
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x5A, 0x03, 0x05]), .bigint(BigIntValue(-5)))
        // Negative zero normalizes to zero.
        XCTAssertEqual(V8Codec.decodeScalar([0xFF, 0x0F, 0x5A, 0x11, 0, 0, 0, 0, 0, 0, 0, 0]), .bigint(.zero))
    }

    func testBigIntArithmetic() {
        let max = BigIntValue(uint64: UInt64.max)
        let twoTo64 = max + BigIntValue(1)
        XCTAssertEqual(twoTo64.magnitude, [0, 1])
        XCTAssertEqual(twoTo64.description, "18446744073709551616")
        XCTAssertEqual(twoTo64 + BigIntValue(-1), max)
        XCTAssertEqual(BigIntValue(5) + BigIntValue(-7), BigIntValue(-2))
        XCTAssertEqual(BigIntValue(-5) + BigIntValue(7), BigIntValue(2))
        XCTAssertEqual(BigIntValue(-5) + BigIntValue(5), .zero)
        XCTAssertEqual(
            BigIntValue(Int64.min) + BigIntValue(Int64.min),
            BigIntValue(negative: true, magnitude: [0, 1]))
        XCTAssertEqual((-twoTo64).description, "-18446744073709551616")
        XCTAssertEqual(BigIntValue(-123).description, "-123")
        XCTAssertEqual(BigIntValue.zero.description, "0")
        XCTAssertEqual(
            BigIntValue(negative: false, magnitude: [0, 0, 1]).description,
            "340282366920938463463374607431768211456")
        XCTAssertTrue(BigIntValue(-3) < BigIntValue(-2))
        XCTAssertTrue(BigIntValue(-3) < BigIntValue(2))
        XCTAssertTrue(BigIntValue(3) < twoTo64)
        XCTAssertTrue(-twoTo64 < BigIntValue(-3))
        XCTAssertFalse(twoTo64 < twoTo64)
        XCTAssertEqual(twoTo64 - twoTo64, .zero)
    }
}
