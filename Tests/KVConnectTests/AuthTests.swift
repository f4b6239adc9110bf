import XCTest
@testable import KVConnect

final class AuthTests: XCTestCase {
    let signer = TokenSigner(secret: Array(repeating: 42, count: 32))

    func testSignVerifyRoundTrip() throws {
        let t = DataPlaneToken(databaseId: "0b1a4a3e-0000-4000-8000-000000000001", expiresAtMs: 2_000)
        let text = signer.sign(t)
        XCTAssertEqual(try signer.verify(text, nowMs: 1_000), t)
    }

    func testExpiredForgedAndMalformed() {
        let text = signer.sign(DataPlaneToken(databaseId: "db", expiresAtMs: 2_000))
        XCTAssertThrowsError(try signer.verify(text, nowMs: 2_000)) {
            XCTAssertEqual($0 as? TokenSigner.VerifyError, .expired)
        }
        let other = TokenSigner(secret: Array(repeating: 43, count: 32))
        XCTAssertThrowsError(try other.verify(text, nowMs: 0)) {
            XCTAssertEqual($0 as? TokenSigner.VerifyError, .badSignature)
        }
        // Changing the payload (e.g. extending the expiry) breaks the signature.
        let parts = text.split(separator: ".")
        let longer = "kvc1.\(base64url(Array("db.9999999.rw".utf8))).\(parts[2])"
        XCTAssertThrowsError(try signer.verify(longer, nowMs: 0)) {
            XCTAssertEqual($0 as? TokenSigner.VerifyError, .badSignature)
        }
        for junk in ["", "kvc1", "kvc1..", "kvc2.a.b", "kvc1.!!!.@@@", "a.b.c.d"] {
            XCTAssertThrowsError(try signer.verify(junk, nowMs: 0), junk)
        }
    }

    func testVerifiedTokenCacheKeepsExpiryAndRefusesForgeries() throws {
        let cache = VerifiedTokenCache(capacity: 2)
        let good = signer.sign(DataPlaneToken(databaseId: "db", expiresAtMs: 2_000))
        XCTAssertEqual(try cache.verify(good, nowMs: 1_000, signer: signer).databaseId, "db")
        XCTAssertEqual(try cache.verify(good, nowMs: 1_500, signer: signer).databaseId, "db")
        XCTAssertThrowsError(try cache.verify(good, nowMs: 2_000, signer: signer)) {
            XCTAssertEqual($0 as? TokenSigner.VerifyError, .expired, "a cached token still expires")
        }
        let forged = String(good.dropLast()) + (good.last == "A" ? "B" : "A")
        for _ in 0..<2 {
            XCTAssertThrowsError(try cache.verify(forged, nowMs: 1_000, signer: signer), "never cached")
        }
        for i in 0..<5 {  // past capacity: cleared, still correct
            let t = signer.sign(DataPlaneToken(databaseId: "db\(i)", expiresAtMs: 9_000))
            XCTAssertEqual(try cache.verify(t, nowMs: 0, signer: signer).databaseId, "db\(i)")
        }
    }

    func testConstantTimeEquals() {
        XCTAssertTrue(constantTimeEquals(Array("abc".utf8), Array("abc".utf8)))
        XCTAssertFalse(constantTimeEquals(Array("abc".utf8), Array("abd".utf8)))
        XCTAssertFalse(constantTimeEquals(Array("abc".utf8), Array("abcd".utf8)))
        XCTAssertFalse(constantTimeEquals([], Array("a".utf8)))
    }

    func testVersionNegotiation() throws {
        XCTAssertEqual(try MetadataExchange.negotiateVersion(body: []), 1)
        XCTAssertEqual(try MetadataExchange.negotiateVersion(body: Array(" \n".utf8)), 1)
        XCTAssertEqual(try MetadataExchange.negotiateVersion(body: Array(#"{"supportedVersions":[1,2,3]}"#.utf8)), 3)
        XCTAssertEqual(try MetadataExchange.negotiateVersion(body: Array(#"{"supportedVersions":[2,1]}"#.utf8)), 2)
        XCTAssertEqual(try MetadataExchange.negotiateVersion(body: Array(#"{"supportedVersions":[1,7]}"#.utf8)), 1)
        for bad in [
            #"{"supportedVersions":[4]}"#, #"{"supportedVersions":[]}"#, #"{"supportedVersions":"1"}"#,
            #"{"other":1}"#, "[1]", "{", #"{"supportedVersions":[true]}"#, #"{"supportedVersions":[1.5]}"#
        ] {
            XCTAssertThrowsError(try MetadataExchange.negotiateVersion(body: Array(bad.utf8)), bad) {
                XCTAssertEqual(($0 as? ProtocolError)?.status, 400, bad)
            }
        }
        XCTAssertThrowsError(try MetadataExchange.negotiateVersion(body: [0xff, 0xfe, 0x7b, 0x7d])) {
            XCTAssertTrue(($0 as? ProtocolError)?.message.contains("UTF-8") ?? false)
        }
    }

    func testMetadataResponseShape() throws {
        let v3 = MetadataExchange.responseBody(
            version: 3, databaseId: "id", endpointPath: "/v2", baseURL: "http://h:1", token: "t",
            expiresAtMs: 1_700_000_000_123)
        let o3 = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(v3)) as? [String: Any])
        XCTAssertEqual(o3["version"] as? Int, 3)
        XCTAssertEqual((o3["endpoints"] as? [[String: String]])?.first?["url"], "/v2")
        XCTAssertEqual(o3["expiresAt"] as? String, "2023-11-14T22:13:20.123Z")
        let v1 = MetadataExchange.responseBody(
            version: 1, databaseId: "id", endpointPath: "/v2", baseURL: "http://h:1", token: "t", expiresAtMs: 0)
        let o1 = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(v1)) as? [String: Any])
        XCTAssertEqual((o1["endpoints"] as? [[String: String]])?.first?["url"], "http://h:1/v2")
    }
}
