import Foundation
import XCTest
@testable import KVEngine
@testable import KVSQLite

/// Vectors are bytes Deno 2.9.8 stored through kvconnectd (`kv.set`).
final class V8ValueTests: XCTestCase {
    func h(_ s: String) -> Bytes { ExportFormat.unhex(s)! }

    /// (Deno's V8 bytes, readable JSON the export writes)
    let readable: [(String, String)] = [
        ("ff10220568656c6c6f", #""hello""#),
        ("ff10220568e96c6c6f", #""héllo""#),
        ("ff10630ce5652c679e8a20003dd800de", #""日本語 😀""#),
        ("ff102200", #""""#),
        ("ff102202ffff", #""ÿÿ""#),
        ("ff104954", "42"),
        ("ff10490d", "-7"),
        ("ff104e000000000000e041", "2147483648.0"),
        ("ff104e000000000000f83f", "1.5"),
        ("ff104e000000000000f87f", #"{"number":"NaN"}"#),
        ("ff104e000000000000f0ff", #"{"number":"-Infinity"}"#),
        ("ff104e0000000000000080", #"{"number":"-0"}"#),
        ("ff105a20d20a3f4eeee073c3f60fe98e01000000", #"{"bigint":"123456789012345678901234567890"}"#),
        ("ff105a110500000000000000", #"{"bigint":"-5"}"#),
        ("ff105a00", #"{"bigint":"0"}"#),
        ("ff1054", "true"),
        ("ff1046", "false"),
        ("ff1030", "null"),
        ("ff105f", #"{"undefined":true}"#),
        ("ff1041034902220374776f41014906240001240003", #"[1,"two",[3]]"#),
        ("ff104100240000", "[]"),
        ("ff1061034900490249044906400203", #"{"sparseArray":{"length":3,"properties":{"0":1,"2":3}}}"#),
        ("ff1061034902220178400103", #"{"sparseArray":{"length":3,"properties":{"1":"x"}}}"#),
        (
            "ff106f22016149022201626f220163410254302400027b0122036420652201787b03",
            #"{"a":1,"b":{"c":[true,null]},"d e":"x"}"#
        ),
        ("ff106f49002201614914490422016249027b03", #"{"0":"a","10":2,"b":1}"#),
        ("ff106f7b00", "{}"),
        ("ff104400b08756febc7842", #"{"date":"2023-11-14T22:13:20.123Z"}"#),
        ("ff1044000000000000f87f", #"{"date":"Invalid Date"}"#),
        // Found by fuzz-v8 (10-minute run): a -0 Date exported as the ISO text of +0.
        ("ff10440000000000000080", #"{"date":-0.0}"#),
        ("ff106f22016242030102ff56420003007b01", #"{"b":{"bytes":"AQL/"}}"#),
        ("ff10410142005642000000240001", #"[{"bytes":""}]"#),
        ("ff106f2205627974657322044151493d7b01", #"{"object":{"bytes":"AQI="}}"#),
        (
            "ff104105220161006304e5652c674e000000000000f43f4e00000000000000805a2000000000000000004000000000000000240005",
            #"["a","日本",1.25,{"number":"-0"},{"bigint":"1180591620717411303424"}]"#
        )
    ]

    /// Values outside the subset: exported raw.
    let raw: [String] = [
        "ff103b22016149023a02",  // Map
        "ff1027490249042c02",  // Set
        "ff1052220461622b6303",  // RegExp
        "ff104204010" + "0ffff5677000400",  // Int16Array
        "ff1042020908",  // ArrayBuffer
        "ff106f2201786f22017349027b012201795e017b02",  // shared reference
        "ff1073220173",  // String object
        "ff104208000000000000f83f5646000800"  // Float64Array
    ]

    func testDenoValuesDecodeToReadableJSONAndBack() throws {
        for (hex, json) in readable {
            let bytes = h(hex)
            let v = try XCTUnwrap(V8Value.decodeExactly(bytes), hex)
            let (j, enc) = ExportFormat.valueJSON(bytes, encoding: 1)
            XCTAssertEqual(j.serialized, json, hex)
            XCTAssertEqual(enc.serialized, #""v8""#)
            // JSON → bytes gives Deno's bytes back.
            let parsed = try JSONValue.parse(json)
            XCTAssertEqual(try ExportFormat.valueBytes(parsed, encoding: 1), bytes, json)
            XCTAssertEqual(try ExportFormat.v8Value(parsed), v, json)
        }
    }

    func testUnsupportedValuesStayRaw() throws {
        for hex in raw {
            let bytes = h(hex)
            XCTAssertNil(V8Value.decodeExactly(bytes), hex)
            let (j, _) = ExportFormat.valueJSON(bytes, encoding: 1)
            XCTAssertEqual(j.serialized, #"{"v8":"\#(Data(bytes).base64EncodedString())"}"#)
            XCTAssertEqual(try ExportFormat.valueBytes(j, encoding: 1), bytes)
        }
        // Malformed and truncated input.
        for hex in ["", "ff", "ff10", "ff1022", "ff102205", "ff1041034902", "ff10545f", "0a0b"] {
            XCTAssertNil(V8Value.decode(h(hex)), hex)
        }
    }

    func testNonCanonicalEncodingsFallBackToRaw() {
        // 'U' (uint32) and 'S' (utf8) decode, but V8 writes 'I'/'N' and '"'/'c'.
        XCTAssertEqual(V8Value.decode(h("ff105505"))?.value, .double(5))
        XCTAssertNil(V8Value.decodeExactly(h("ff105505")))
        XCTAssertEqual(V8Value.decode(h("ff10530161"))?.value, .string("a"))
        XCTAssertNil(V8Value.decodeExactly(h("ff10530161")))
        // A lone surrogate has no String form.
        XCTAssertNil(V8Value.decode(h("ff10630200d8")))
    }

    func testTwoBytePaddingFollowsOffset() throws {
        // "日" alone: 'c' at offset 2, length at 3, data at 4: no padding.
        XCTAssertEqual(try V8Value.string("日").encode(), h("ff106302e565"))
        // Inside an array after a one-byte string: padded.
        XCTAssertEqual(
            try V8Value.array([.string("a"), .string("日")]).encode(),
            h("ff104102220161006302e565240002"))
    }

    func testNumbersKeepTheirTag() throws {
        XCTAssertEqual(try ExportFormat.valueBytes(try JSONValue.parse("1"), encoding: 1), h("ff104902"))
        XCTAssertEqual(
            try ExportFormat.valueBytes(try JSONValue.parse("1.0"), encoding: 1), h("ff104e000000000000f03f"))
        // An integer that is not an int32 is a double.
        XCTAssertEqual(
            try ExportFormat.valueBytes(try JSONValue.parse("4294967296"), encoding: 1),
            try V8Value.double(4294967296).encode())
        let (j, _) = ExportFormat.valueJSON(h("ff104e000000000000f03f"), encoding: 1)
        XCTAssertEqual(j.serialized, "1.0")
    }

    func testKeyCodec() throws {
        let key = h(
            "0100ff0100027300ff740015050bf4feffffffffffffffffffff21bff8000000000000217fffffffffffffff21fff8000000000000272621c450000000000000"
        )
        let parts = try XCTUnwrap(KeyCodec.decode(key))
        XCTAssertEqual(parts.count, 10)
        XCTAssertEqual(parts[0], .bytes([0, 1]))
        XCTAssertEqual(parts[1], .string("s\u{0}t"))
        XCTAssertEqual(parts[2], .bigint(BigIntValue(5)))
        XCTAssertEqual(parts[3], .bigint(-BigIntValue(decimal: "1208925819614629174706176")!))
        XCTAssertEqual(parts[4], .number(1.5))
        XCTAssertEqual(parts[5], .number(-0.0))
        XCTAssertEqual(KeyCodec.encode(parts), key)
        XCTAssertEqual(
            ExportFormat.keyJSON(key).serialized,
            #"[{"bytes":"AAE="},"s\u0000t",{"bigint":"5"},{"bigint":"-1208925819614629174706176"},{"number":1.5},{"number":"-0"},{"number":"NaN"},true,false,{"number":1180591620717411303424}]"#
                .replacingOccurrences(of: "1180591620717411303424", with: "\(pow(2.0, 70.0))"))
        XCTAssertEqual(try ExportFormat.keyBytes(ExportFormat.keyJSON(key)), key)
        // Every bigint length class round-trips.
        for s in [
            "0", "1", "-1", "255", "-256", "18446744073709551615", "-18446744073709551616",
            "340282366920938463463374607431768211456"
        ] {
            let k = KeyCodec.encode([.bigint(BigIntValue(decimal: s)!)])
            XCTAssertEqual(KeyCodec.decode(k), [.bigint(BigIntValue(decimal: s)!)], s)
        }
        // Not a tuple: raw.
        for bad in ["02616263", "ff", "0161", "160001", "02ff00"] {
            XCTAssertEqual(
                ExportFormat.keyJSON(h(bad)).serialized, #"{"rawKey":"\#(Data(h(bad)).base64EncodedString())"}"#)
            XCTAssertEqual(try ExportFormat.keyBytes(ExportFormat.keyJSON(h(bad))), h(bad))
        }
    }

    func testJSONParserAndPrinter() throws {
        let text = #"{"b":[1,-2.5e3,true,null,"x\"\\\n\u0001é😀"],"a":{}}"#
        let j = try JSONValue.parse(text)
        XCTAssertEqual(j.serialized, text)
        XCTAssertEqual(try JSONValue.parse(#""\ud83d\ude00""#).serialized, #""😀""#)
        for bad in ["", "{", "[1,]", "01", "\"\\ud800\"", "{\"a\" 1}", "tru", "1 2", "\"\u{1}\""] {
            XCTAssertThrowsError(try JSONValue.parse(bad), bad)
        }
    }

    func testDates() {
        for ms: Double in [0, 1700000000123, -1, 253402300799999, -62167219200000, 951782400000] {
            let s = ExportFormat.isoDate(ms)!
            XCTAssertEqual(ExportFormat.parseISODate(s), ms, s)
        }
        XCTAssertEqual(ExportFormat.isoDate(0), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(ExportFormat.isoDate(-1), "1969-12-31T23:59:59.999Z")
        XCTAssertNil(ExportFormat.isoDate(0.5))
        XCTAssertNil(ExportFormat.parseISODate("2023-02-30T00:00:00.000Z"))
        // Outside ISO range: a number.
        let (j, _) = ExportFormat.valueJSON(try! V8Value.date(8.64e15).encode(), encoding: 1)
        XCTAssertEqual(j.serialized, #"{"date":8640000000000000.0}"#)
    }

    func testExportLineRoundTrip() throws {
        let entries = [
            ExportedEntry(
                key: KeyCodec.encode([.string("a"), .number(1)]), value: h("ff104954"), encoding: 1,
                versionstamp: Versionstamps.make(counter: 7), expiresAtMs: nil),
            ExportedEntry(
                key: [0x02, 0x62, 0x00], value: [1, 0, 0, 0, 0, 0, 0, 0], encoding: 2,
                versionstamp: Versionstamps.make(counter: 8), expiresAtMs: 1_900_000_000_000),
            ExportedEntry(
                key: [0xEE], value: [0, 1, 2], encoding: 3,
                versionstamp: h("00000000000000090001"), expiresAtMs: nil),
            ExportedEntry(
                key: [0x02, 0x63, 0x00], value: [1, 2], encoding: 2,
                versionstamp: Versionstamps.make(counter: 9), expiresAtMs: nil),
            ExportedEntry(
                key: [0x02, 0x64, 0x00], value: [9], encoding: 7,
                versionstamp: Versionstamps.make(counter: 9), expiresAtMs: nil)
        ]
        let lines = entries.map(ExportFormat.line(for:))
        XCTAssertEqual(
            lines[0], #"{"key":["a",{"number":1}],"value":42,"encoding":"v8","versionstamp":"00000000000000070000"}"#)
        XCTAssertEqual(
            lines[1],
            #"{"key":["b"],"value":{"u64":"1"},"encoding":"u64","versionstamp":"00000000000000080000","expiresAt":1900000000000}"#
        )
        XCTAssertEqual(
            lines[2],
            #"{"key":{"rawKey":"7g=="},"value":{"bytes":"AAEC"},"encoding":"bytes","versionstamp":"00000000000000090001"}"#
        )
        for (e, l) in zip(entries, lines) {
            XCTAssertEqual(try ExportFormat.parse(line: l), e, l)
        }
        for bad in [
            "[]", "{}", #"{"key":["a"],"value":1,"encoding":"v8"}"#,
            #"{"key":["a"],"value":1,"encoding":"v9","versionstamp":"00000000000000070000"}"#,
            #"{"key":[1],"value":1,"encoding":"v8","versionstamp":"00000000000000070000"}"#,
            #"{"key":["a"],"value":{"bigint":"x"},"encoding":"v8","versionstamp":"00000000000000070000"}"#,
            #"{"key":["a"],"value":{"sparseArray":{"length":1,"properties":{"5":1}}},"encoding":"v8","versionstamp":"00000000000000070000"}"#
        ] {
            XCTAssertThrowsError(try ExportFormat.parse(line: bad), bad)
        }
    }
}
