import Glibc
import XCTest

@testable import HTTPFront

/// Connection slots without sockets: totals, per-IP counts, exactly-once release.
final class ConnectionLimiterTests: XCTestCase {
    private func address(_ ip: String) -> sockaddr_storage {
        var storage = sockaddr_storage()
        withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = UInt16(4512).bigEndian
                _ = inet_pton(AF_INET, ip, &sin.pointee.sin_addr)
            }
        }
        return storage
    }

    private func acquire(_ limiter: ConnectionLimiter, _ ip: String) -> ConnectionSlot? {
        if case let .success(slot) = limiter.acquire(address(ip)) { return slot }
        return nil
    }

    func testPerIPAndTotalLimits() {
        let limiter = ConnectionLimiter(maxTotal: 3, maxPerIP: 2)
        let a1 = acquire(limiter, "10.0.0.1")
        let a2 = acquire(limiter, "10.0.0.1")
        XCTAssertNotNil(a1)
        XCTAssertNotNil(a2)
        guard case let .failure(perIP) = limiter.acquire(address("10.0.0.1")) else {
            return XCTFail("third connection from one IP must be refused")
        }
        XCTAssertEqual(perIP.reason, .perIP)
        let b1 = acquire(limiter, "10.0.0.2")
        XCTAssertNotNil(b1)
        guard case let .failure(total) = limiter.acquire(address("10.0.0.3")) else {
            return XCTFail("fourth connection must be refused")
        }
        XCTAssertEqual(total.reason, .total)
        XCTAssertEqual(limiter.openConnections, 3)
        XCTAssertEqual(limiter.openConnections(from: address("10.0.0.1")), 2)
        XCTAssertEqual(limiter.refused.total, 1)
        XCTAssertEqual(limiter.refused.perIP, 1)
        withExtendedLifetime((a1, a2, b1)) {}
    }

    func testReleaseIsIdempotentAndDroppedSlotsReleaseThemselves() {
        let limiter = ConnectionLimiter(maxTotal: 10, maxPerIP: 10)
        let slot = acquire(limiter, "10.0.0.1")
        XCTAssertEqual(limiter.openConnections, 1)
        slot?.release()
        slot?.release()
        XCTAssertEqual(limiter.openConnections, 0)
        do {
            _ = acquire(limiter, "10.0.0.2")  // dropped at once
        }
        XCTAssertEqual(limiter.openConnections, 0)
        XCTAssertEqual(limiter.openConnections(from: address("10.0.0.2")), 0)
    }

    func testSlotOutlivingItsLimiterIsHarmless() {
        var limiter: ConnectionLimiter? = ConnectionLimiter(maxTotal: 1, maxPerIP: 1)
        let slot = limiter.flatMap { acquire($0, "10.0.0.1") }
        XCTAssertNotNil(slot)
        limiter = nil
        slot?.release()
    }

    func testIPv4AndItsMappedIPv6FormAreOneClient() {
        var v6 = sockaddr_storage()
        withUnsafeMutablePointer(to: &v6) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                _ = inet_pton(AF_INET6, "::ffff:10.0.0.1", &sin6.pointee.sin6_addr)
            }
        }
        XCTAssertEqual(ClientIP(v6), ClientIP(address("10.0.0.1")))
        XCTAssertNotEqual(ClientIP(address("10.0.0.2")), ClientIP(address("10.0.0.1")))
    }
}
