import Foundation
import XCTest
@testable import KVConnect

/// Keys shared through the database (PostgreSQL): what one daemon signs,
/// every daemon verifies, also across a rotation.
final class SigningKeyringTests: XCTestCase {
    let fileKey = [UInt8](repeating: 1, count: 32)
    let k1 = [UInt8](repeating: 2, count: 32)
    let k2 = [UInt8](repeating: 3, count: 32)
    let k3 = [UInt8](repeating: 4, count: 32)

    /// Stands in for the database's key table.
    final class SharedKeys: @unchecked Sendable {
        let lock = NSLock()
        var keys: [[UInt8]]
        var reads = 0
        init(_ keys: [[UInt8]]) { self.keys = keys }
        func read() -> [[UInt8]] {
            lock.lock()
            defer { lock.unlock() }
            reads += 1
            return keys
        }
        func rotate(to k: [UInt8]) {
            lock.lock()
            keys = [k, keys[0]]
            lock.unlock()
        }
    }

    func daemon(_ shared: SharedKeys, interval: TimeInterval = 0) -> SigningKeyring {
        let ring = SigningKeyring(default: TokenSigner(secret: fileKey), refreshInterval: interval)
        ring.setKeys(shared.read(), forDatabase: "pg", refresh: { shared.read() })
        return ring
    }

    func testPreviousKeyStillVerifiesAfterRotation() throws {
        let shared = SharedKeys([k1])
        let a = daemon(shared), b = daemon(shared)
        let old = a.sign(DataPlaneToken(databaseId: "pg", expiresAtMs: 10_000))
        shared.rotate(to: k2)
        XCTAssertTrue(a.refresh(database: "pg"))
        let new = a.sign(DataPlaneToken(databaseId: "pg", expiresAtMs: 10_000))
        XCTAssertNotEqual(old, new)
        XCTAssertEqual(try a.verify(old, nowMs: 0).databaseId, "pg", "previous key still verifies")
        // b has not refreshed yet: the unknown signature makes it re-read the keys.
        XCTAssertEqual(try b.verify(new, nowMs: 0).databaseId, "pg")
        XCTAssertEqual(try b.verify(old, nowMs: 0).databaseId, "pg")
    }

    func testRetiredKeyStopsVerifyingEvenWhenCached() throws {
        let shared = SharedKeys([k1])
        let ring = daemon(shared)
        let cache = VerifiedTokenCache()
        let old = ring.sign(DataPlaneToken(databaseId: "pg", expiresAtMs: 10_000))
        XCTAssertEqual(try cache.verify(old, nowMs: 0, keyring: ring).databaseId, "pg")
        shared.rotate(to: k2)
        shared.rotate(to: k3)  // k1 is gone
        XCTAssertTrue(ring.refresh(database: "pg"))
        XCTAssertThrowsError(try cache.verify(old, nowMs: 0, keyring: ring)) {
            XCTAssertEqual($0 as? TokenSigner.VerifyError, .badSignature)
        }
    }

    func testDatabasesWithoutSharedKeysUseTheFileKey() throws {
        let ring = daemon(SharedKeys([k1]))
        let sqlite = ring.sign(DataPlaneToken(databaseId: "sqlite-db", expiresAtMs: 10_000))
        XCTAssertEqual(try TokenSigner(secret: fileKey).verify(sqlite, nowMs: 0).databaseId, "sqlite-db")
        let pg = ring.sign(DataPlaneToken(databaseId: "pg", expiresAtMs: 10_000))
        XCTAssertThrowsError(try TokenSigner(secret: fileKey).verify(pg, nowMs: 0))
        XCTAssertEqual(try TokenSigner(keys: [k1]).verify(pg, nowMs: 0).databaseId, "pg")
        // A token that claims the shared database but was signed with the file key fails.
        let forged = TokenSigner(secret: fileKey).sign(DataPlaneToken(databaseId: "pg", expiresAtMs: 10_000))
        XCTAssertThrowsError(try ring.verify(forged, nowMs: 0))
    }

    func testForgeriesDoNotHammerTheDatabase() {
        let shared = SharedKeys([k1])
        let ring = daemon(shared, interval: 3600)
        let forged = TokenSigner(secret: k3).sign(DataPlaneToken(databaseId: "pg", expiresAtMs: 10_000))
        let before = shared.reads
        for _ in 0..<100 { XCTAssertThrowsError(try ring.verify(forged, nowMs: 0)) }
        XCTAssertEqual(shared.reads, before, "re-reads at most once per refresh interval")
    }

    func testClaimedDatabaseId() {
        let t = TokenSigner(secret: k1).sign(DataPlaneToken(databaseId: "abc-123", expiresAtMs: 5))
        XCTAssertEqual(TokenSigner.claimedDatabaseId(t), "abc-123")
        XCTAssertNil(TokenSigner.claimedDatabaseId("kvc1.???.x"))
        XCTAssertNil(TokenSigner.claimedDatabaseId("nope"))
    }
}
