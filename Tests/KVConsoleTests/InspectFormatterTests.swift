import KVEngine
import XCTest
@testable import KVConsole

/// Expected strings are real `Deno.inspect` output (Deno 2.9.8) for the
/// values whose V8 bytes are spelled out; the browser test compares the
/// console with Deno for values written by the Deno CLI itself.
final class InspectFormatterTests: XCTestCase {
    private func v8(_ hex: String) -> KVValue {
        KVValue(data: KeyPresentation.hexBytes(hex.replacingOccurrences(of: " ", with: ""))!, encoding: .v8)
    }

    private func show(_ hex: String) -> String { InspectFormatter.inspect(v8(hex)) }

    func testPlainObject() {
        // { a: 1, b: "x", "a-b": 2 }
        XCTAssertEqual(
            show("FF0F 6F 2201 61 4902 2201 62 2201 78 2203 612D62 4904 7B03"), #"{ a: 1, b: "x", "a-b": 2 }"#)
        XCTAssertEqual(show("FF0F 6F 7B00"), "{}")
    }

    func testMapSetBigintDateRegExp() {
        XCTAssertEqual(show("FF0F 3B 2201 6B 4902 3A02"), #"Map(1) { "k" => 1 }"#)
        XCTAssertEqual(show("FF0F 27 4902 4904 2C02"), "Set(2) { 1, 2 }")
        XCTAssertEqual(show("FF0F 5A10 0100000000000000"), "1n")
        XCTAssertEqual(show("FF0F 5A11 0100000000000000"), "-1n")
        XCTAssertEqual(show("FF0F 44 0000000000000000"), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(show("FF0F 52 2202 7265 01"), "/re/g")
        XCTAssertEqual(show("FF0F 52 2201 61 26"), "/a/ims")  // flags i, m, s
    }

    func testCircularAndSharedReferences() {
        // c = { name: "c" }; c.self = c
        let circ = "6F 2204 6E616D65 2201 63 2204 73656C66 5E00 7B02"
        XCTAssertEqual(show("FF0F " + circ), #"<ref *1> { name: "c", self: [Circular *1] }"#)
        // [c, c]: the second element is a back-reference to the first
        XCTAssertEqual(
            show("FF0F 4102 6F 2204 6E616D65 2201 63 2204 73656C66 5E01 7B02 5E01 2400 02"),
            #"[ <ref *1> { name: "c", self: [Circular *1] }, <ref *1> { name: "c", self: [Circular *1] } ]"#)
    }

    func testArraysHolesAndTypedArrays() {
        // [1, , 3] (holey arrays are written sparse)
        XCTAssertEqual(show("FF0F 6103 4900 4902 4904 4906 4002 03"), "[ 1, <1 empty item>, 3 ]")
        XCTAssertEqual(show("FF0F 4103 4902 4904 4906 2400 03"), "[ 1, 2, 3 ]")
        XCTAssertEqual(show("FF0F 4100 2400 00"), "[]")
        // [new Uint8Array([1, 2])]
        XCTAssertEqual(show("FF0F 4101 42 02 0102 56 42 00 02 00 2400 01"), "[ Uint8Array(2) [ 1, 2 ] ]")
        // new Int16Array([1, -2])
        XCTAssertEqual(show("FF0F 42 04 0100FEFF 56 77 00 04 00"), "Int16Array(2) [ 1, -2 ]")
        XCTAssertEqual(InspectFormatter.inspect(KVValue(data: [1, 2], encoding: .bytes)), "Uint8Array(2) [ 1, 2 ]")
        XCTAssertEqual(
            InspectFormatter.inspect(KVValue(data: [5, 0, 0, 0, 0, 0, 0, 0], encoding: .le64)), "[Deno.KvU64: 5n]")
    }

    func testDepthLimitAndStrings() {
        // { x: { y: { z: { w: { v: 1 } } } } } is exactly at Deno's depth limit
        XCTAssertEqual(
            show("FF0F 6F 2201 78 6F 2201 79 6F 2201 7A 6F 2201 77 6F 2201 76 4902 7B01 7B01 7B01 7B01 7B01"),
            "{ x: { y: { z: { w: { v: 1 } } } } }")
        // one level deeper becomes [Object]
        XCTAssertEqual(
            show(
                "FF0F 6F 2201 78 6F 2201 79 6F 2201 7A 6F 2201 77 6F 2201 76 6F 2201 75 4902 7B01 7B01 7B01 7B01 7B01 7B01"
            ),
            "{ x: { y: { z: { w: { v: [Object] } } } } }")
        XCTAssertEqual(show("FF0F 2203 737472"), #""str""#)
        XCTAssertEqual(InspectFormatter.quote("it's \"x\""), "`it's \"x\"`")
        XCTAssertEqual(InspectFormatter.quote("a\"b"), "'a\"b'")
        XCTAssertEqual(InspectFormatter.quote("l1\nl2\u{01}"), #""l1\nl2\x01""#)
        XCTAssertEqual(show("FF0F 5F"), "undefined")
        XCTAssertEqual(show("FF0F 30"), "null")
    }

    func testNumbersAsJavaScriptPrintsThem() {
        let cases: [(Double, String)] = [
            (1, "1"), (-0.0, "-0"), (0.1, "0.1"), (1.5, "1.5"), (100, "100"),
            (1e21, "1e+21"), (123456789012345680000, "123456789012345680000"),
            (1e-7, "1e-7"), (-2.5e-7, "-2.5e-7"), (0.000001, "0.000001"),
            (.nan, "NaN"), (-.infinity, "-Infinity"), (2.5e300, "2.5e+300")
        ]
        for (d, text) in cases { XCTAssertEqual(InspectFormatter.number(d), text, "\(d)") }
    }

    func testErrors() {
        // new RangeError("x") with its stack removed; with a stack, Deno prints the stack.
        XCTAssertEqual(show("FF0F 72 52 6D 2201 78 2E"), "[RangeError: x]")
        XCTAssertEqual(show("FF0F 72 6D 2201 78 73 2208 4572726F723A2078 2E"), "Error: x")
    }

    func testUndecodableBytesSayWhy() {
        XCTAssertTrue(show("FF0F 6F 2201").hasPrefix("[undecodable V8 value"))
        XCTAssertTrue(show("0102").hasPrefix("[undecodable V8 value"))
    }
}

final class ValuePresentationTests: XCTestCase {
    func testTypedEditorRoundTrips() throws {
        let cases: [(String, String, String)] = [
            ("string", "hello", #""hello""#), ("number", "2.5", "2.5"), ("number", "7", "7"),
            ("bigint", "-123456789012345678901234567890", "-123456789012345678901234567890n"),
            ("boolean", "true", "true"), ("u64", "18446744073709551615", "[Deno.KvU64: 18446744073709551615n]"),
            ("json", #"{"a": [1, "x", null, {"b": true}]}"#, #"{ a: [ 1, "x", null, { b: true } ] }"#)
        ]
        for (type, text, shown) in cases {
            let v = try ValuePresentation.value(type: type, text: text)
            XCTAssertEqual(InspectFormatter.inspect(v), shown)
            let editor = try XCTUnwrap(ValuePresentation.editor(v))
            XCTAssertEqual(editor.0, type)
            // The editor's text saves back to the same bytes.
            XCTAssertEqual(try ValuePresentation.value(type: editor.0, text: editor.1), v)
        }
    }

    func testBadInputIsRefused() {
        XCTAssertThrowsError(try ValuePresentation.value(type: "number", text: "12abc"))
        XCTAssertThrowsError(try ValuePresentation.value(type: "bigint", text: "1.5"))
        XCTAssertThrowsError(try ValuePresentation.value(type: "u64", text: "-1"))
        XCTAssertThrowsError(try ValuePresentation.value(type: "json", text: "{nope"))
        XCTAssertThrowsError(try ValuePresentation.value(type: "date", text: "x"))
    }

    func testValuesWithoutAnEditableForm() {
        // A Map and a circular object open no editor (they are replaced, not edited).
        XCTAssertNil(
            ValuePresentation.editor(KVValue(data: KeyPresentation.hexBytes("FF0F3B22016B49023A02")!, encoding: .v8)))
        XCTAssertNil(
            ValuePresentation.editor(KVValue(data: KeyPresentation.hexBytes("FF0F6F22016E5E007B01")!, encoding: .v8)))
        XCTAssertEqual(
            ValuePresentation.typeName(KVValue(data: KeyPresentation.hexBytes("FF0F3B22016B49023A02")!, encoding: .v8)),
            "Map")
    }

    func testKeysParseAndShowWithTheirTypes() throws {
        let key = try KeyPresentation.parse(#"["users", 1, {"bigint": "2"}, true, {"bytes": "0102"}]"#)
        XCTAssertEqual(
            KeyCodec.decode(key), [.string("users"), .number(1), .bigint(BigIntValue(2)), .bool(true), .bytes([1, 2])])
        XCTAssertEqual(
            KeyPresentation.text(KeyCodec.decode(key)!), #"[ "users", 1, 2n, true, Uint8Array(2) [ 1, 2 ] ]"#)
        XCTAssertEqual(KeyPresentation.bytes(fromId: KeyPresentation.id(key)), key)
        XCTAssertThrowsError(try KeyPresentation.parse("[]"))
        XCTAssertThrowsError(try KeyPresentation.parse(#"{"a": 1}"#))
        XCTAssertThrowsError(try KeyPresentation.parse(#"[null]"#))
    }
}
