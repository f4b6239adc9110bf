import XCTest
@testable import KVEngine
@testable import KVSQLite

final class NumericMutationTests: KVTestCase {
    private func sum(_ key: String, _ v: KVValue, min: Bytes? = nil, max: Bytes? = nil, clamp: Bool = false) -> Mutation
    {
        Mutation(key: k(key), kind: .sum(v, min: min, max: max, clamp: clamp))
    }

    // MARK: LE64

    func testLE64SumMinMax() throws {
        try store.commit([sum("s", u64(5))])
        XCTAssertEqual(try store.get("s")?.value, u64(5))
        try store.commit([sum("s", u64(10)), sum("s", u64(1))])
        XCTAssertEqual(try store.get("s")?.value, u64(16))

        try store.commit([Mutation(key: k("mn"), kind: .min(u64(50)))])
        try store.commit([Mutation(key: k("mn"), kind: .min(u64(70)))])
        XCTAssertEqual(try store.get("mn")?.value, u64(50))
        try store.commit([Mutation(key: k("mn"), kind: .min(u64(20)))])
        XCTAssertEqual(try store.get("mn")?.value, u64(20))

        try store.commit([Mutation(key: k("mx"), kind: .max(u64(50)))])
        try store.commit([Mutation(key: k("mx"), kind: .max(u64(20)))])
        XCTAssertEqual(try store.get("mx")?.value, u64(50))
        try store.commit([Mutation(key: k("mx"), kind: .max(u64(UInt64.max)))])
        XCTAssertEqual(try store.get("mx")?.value, u64(UInt64.max))
        // Unsigned comparison: 2^63 > 1.
        try store.commit([
            Mutation(key: k("mn2"), kind: .set(u64(1 << 63))), Mutation(key: k("mn2"), kind: .min(u64(1)))
        ])
        XCTAssertEqual(try store.get("mn2")?.value, u64(1))
    }

    func testLE64SumWrapsAround() throws {
        try store.commit([Mutation(key: k("w"), kind: .set(u64(UInt64.max - 1)))])
        try store.commit([sum("w", u64(3))])
        XCTAssertEqual(try store.get("w")?.value, u64(1))
        try store.commit([sum("w", u64(UInt64.max))])  // + (2^64 - 1) == -1
        XCTAssertEqual(try store.get("w")?.value, u64(0))
    }

    func testLE64ValueEncoding() throws {
        try store.commit([sum("s", u64(0x0102))])
        let e = try XCTUnwrap(try store.get("s"))
        XCTAssertEqual(e.value.encoding, .le64)
        XCTAssertEqual(e.value.data, [0x02, 0x01, 0, 0, 0, 0, 0, 0])
    }

    func testLE64ErrorTexts() throws {
        try store.commit([set("bytes", bytesValue("x")), set("num", v8num(1))])
        for op in ["sum", "min", "max"] {
            func mutation(_ key: String, _ v: KVValue) -> Mutation {
                switch op {
                case "sum": return sum(key, v)
                case "min": return Mutation(key: k(key), kind: .min(v))
                default: return Mutation(key: k(key), kind: .max(v))
                }
            }
            let badOperand = KVError.invalidMutation("Failed to perform '\(op)' mutation on a non-U64 operand")
            let badValue = KVError.invalidMutation(
                "Failed to perform '\(op)' mutation on a non-U64 value in the database")
            XCTAssertEqual(store.writeError([mutation("new", KVValue(data: [1, 2, 3], encoding: .le64))]), badOperand)
            XCTAssertEqual(
                store.writeError([mutation("new", KVValue(data: Bytes(repeating: 0, count: 9), encoding: .le64))]),
                badOperand)
            XCTAssertEqual(
                store.writeError([mutation("new", KVValue(data: Bytes(repeating: 0, count: 8), encoding: .bytes))]),
                badOperand)
            XCTAssertEqual(store.writeError([mutation("bytes", u64(1))]), badValue)
            XCTAssertEqual(store.writeError([mutation("num", u64(1))]), badValue)
            if op != "sum" {
                XCTAssertEqual(store.writeError([mutation("new", v8num(1))]), badOperand)
                XCTAssertEqual(store.writeError([mutation("new", v8big(1))]), badOperand)
            }
        }
        XCTAssertNil(try store.get("new"))
        XCTAssertEqual(try store.get("bytes")?.value, bytesValue("x"))
    }

    // MARK: V8

    func testV8NumberSum() throws {
        try store.commit([sum("n", v8num(1.5))])
        XCTAssertEqual(try store.get("n")?.value, v8num(1.5))
        try store.commit([sum("n", v8num(-4))])
        XCTAssertEqual(try store.get("n")?.value, v8num(-2.5))
        // Stored int32 ('I') values from clients are numbers too.
        try store.commit([set("i", KVValue(data: [0xFF, 0x0F, 0x49, 0x54], encoding: .v8))])  // 42
        try store.commit([sum("i", KVValue(data: [0xFF, 0x0F, 0x55, 0x02], encoding: .v8))])  // + 2 (uint32)
        XCTAssertEqual(try store.get("i")?.value, v8num(44))
    }

    func testV8BigIntSum() throws {
        try store.commit([sum("b", v8big(BigIntValue(uint64: UInt64.max)))])
        try store.commit([sum("b", v8big(2))])
        XCTAssertEqual(try store.get("b")?.value, v8big(BigIntValue(negative: false, magnitude: [1, 1])))
        try store.commit([sum("b", v8big(BigIntValue(negative: true, magnitude: [3, 1])))])
        XCTAssertEqual(try store.get("b")?.value, v8big(-2))
        try store.commit([sum("b", v8big(2))])
        XCTAssertEqual(try store.get("b")?.value, v8big(.zero))
        XCTAssertEqual(try store.get("b")?.value.data, [0xFF, 0x0F, 0x5A, 0x00])
    }

    func testV8SumBounds() throws {
        let lo = V8Codec.encode(.number(0)), hi = V8Codec.encode(.number(10))
        try store.commit([set("n", v8num(5))])
        try store.commit([sum("n", v8num(4), min: lo, max: hi)])
        XCTAssertEqual(try store.get("n")?.value, v8num(9))
        let outOfRange = KVError.invalidMutation("The result of a Sum operation would exceed its range limit")
        XCTAssertEqual(store.writeError([sum("n", v8num(2), min: lo, max: hi)]), outOfRange)
        XCTAssertEqual(store.writeError([sum("n", v8num(-10), min: lo, max: hi)]), outOfRange)
        XCTAssertEqual(try store.get("n")?.value, v8num(9))
        try store.commit([sum("n", v8num(100), min: lo, max: hi, clamp: true)])
        XCTAssertEqual(try store.get("n")?.value, v8num(10))
        try store.commit([sum("n", v8num(-100), min: lo, max: hi, clamp: true)])
        XCTAssertEqual(try store.get("n")?.value, v8num(0))
        // Only one bound.
        try store.commit([sum("n", v8num(1000), max: nil, clamp: false)])
        try store.commit([sum("n", v8num(-5000), min: lo, clamp: true)])
        XCTAssertEqual(try store.get("n")?.value, v8num(0))
        // Empty bound bytes mean "no bound".
        try store.commit([sum("n", v8num(-1), min: [], max: [])])
        XCTAssertEqual(try store.get("n")?.value, v8num(-1))
        // Absent key: the operand, bounds applied.
        XCTAssertEqual(store.writeError([sum("fresh", v8num(50), min: lo, max: hi)]), outOfRange)
        try store.commit([sum("fresh", v8num(50), min: lo, max: hi, clamp: true)])
        XCTAssertEqual(try store.get("fresh")?.value, v8num(10))

        let blo = V8Codec.encode(.bigint(BigIntValue(-10))), bhi = V8Codec.encode(.bigint(BigIntValue(10)))
        try store.commit([sum("b", v8big(3), min: blo, max: bhi)])
        XCTAssertEqual(store.writeError([sum("b", v8big(8), min: blo, max: bhi)]), outOfRange)
        try store.commit([sum("b", v8big(8), min: blo, max: bhi, clamp: true)])
        XCTAssertEqual(try store.get("b")?.value, v8big(10))
        try store.commit([
            sum("b", v8big(BigIntValue(negative: true, magnitude: [0, 5])), min: blo, max: bhi, clamp: true)
        ])
        XCTAssertEqual(try store.get("b")?.value, v8big(-10))
    }

    func testV8ErrorTexts() throws {
        try store.commit([
            set("n", v8num(1)), set("b", v8big(1)), set("s", bytesValue("x")),
            set("str", KVValue(data: [0xFF, 0x0F, 0x22, 0x01, 0x61], encoding: .v8)),
            set("u", u64(1))
        ])
        let invalidParams = KVError.invalidMutation("Some of the parameters are not valid V8 values")
        let string = KVValue(data: [0xFF, 0x0F, 0x22, 0x01, 0x61], encoding: .v8)
        XCTAssertEqual(store.writeError([sum("n", string)]), invalidParams)
        XCTAssertEqual(store.writeError([sum("n", KVValue(data: [], encoding: .v8))]), invalidParams)
        XCTAssertEqual(store.writeError([sum("n", v8num(1), min: [0xFF, 0x0F, 0x54])]), invalidParams)
        XCTAssertEqual(
            store.writeError([sum("n", v8num(1), max: V8Codec.encode(.bigint(BigIntValue(3))))]),
            .invalidMutation("Min/max parameters have different types than the operand"))
        XCTAssertEqual(
            store.writeError([sum("b", v8big(1), min: V8Codec.encode(.number(0)))]),
            .invalidMutation("Min/max parameters have different types than the operand"))
        XCTAssertEqual(store.writeError([sum("n", v8big(1))]), .invalidMutation("Cannot sum Number with BigInt"))
        XCTAssertEqual(store.writeError([sum("b", v8num(1))]), .invalidMutation("Cannot sum BigInt with Number"))
        XCTAssertEqual(store.writeError([sum("u", v8num(1))]), .invalidMutation("Cannot sum KvU64 with Number"))
        let nonNumber = KVError.invalidMutation(
            "Failed to perform 'sum' mutation on a non-number, non-bigint value in the database")
        XCTAssertEqual(store.writeError([sum("s", v8num(1))]), nonNumber)
        XCTAssertEqual(store.writeError([sum("str", v8num(1))]), nonNumber)
        XCTAssertEqual(
            store.writeError([sum("n", bytesValue("12345678"))]),
            .invalidMutation("Failed to perform 'sum' mutation on a non-U64 operand"))
        XCTAssertEqual(try store.get("n")?.value, v8num(1))
        XCTAssertEqual(try store.get("b")?.value, v8big(1))
    }

    func testBigIntOperandOnKvU64() throws {
        // Compatibility with denokv: a u64-range bigint added to a KvU64 stays a KvU64 (wrapping).
        try store.commit([set("u", u64(UInt64.max))])
        try store.commit([sum("u", v8big(2))])
        XCTAssertEqual(try store.get("u")?.value, u64(1))
        XCTAssertEqual(store.writeError([sum("u", v8big(-1))]), .invalidMutation("Cannot sum KvU64 with BigInt"))
    }

    func testInvalidMutationRollsBackEarlierMutationsOfThatWriteOnly() throws {
        try store.commit([set("bytes", bytesValue("x"))])
        let good1 = AtomicWrite(mutations: [set("g1", bytesValue("1"))])
        let bad = AtomicWrite(
            mutations: [
                set("a", bytesValue("1")), sum("a2", u64(1)),
                sum("bytes", u64(1)), set("c", bytesValue("3"))
            ],
            enqueues: [Enqueue(payload: [1], deadlineMs: 0, keysIfUndelivered: [], backoffSchedule: [])])
        let good2 = AtomicWrite(mutations: [set("g2", bytesValue("2"))])
        let results = submitTogether(store, [good1, bad, good2])
        guard case .success(.committed(let v1)) = results[0], case .success(.committed(let v3)) = results[2] else {
            return XCTFail("\(results)")
        }
        XCTAssertEqual(
            results[1],
            .failure(.invalidMutation("Failed to perform 'sum' mutation on a non-U64 value in the database")))
        // The failed write consumed no versionstamp.
        XCTAssertEqual(Versionstamps.counter(of: v3), Versionstamps.counter(of: v1)! + 1)
        XCTAssertNil(try store.get("a"))
        XCTAssertNil(try store.get("a2"))
        XCTAssertNil(try store.get("c"))
        XCTAssertEqual(try store.get("g1")?.value, bytesValue("1"))
        XCTAssertEqual(try store.get("g2")?.value, bytesValue("2"))
        XCTAssertEqual(try store.queuedMessageCount(), 0)
    }
}
