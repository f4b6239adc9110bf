import Foundation
import XCTest
@testable import HTTPFront

// Runs a server for manual poking when HTTPFRONT_MANUAL_PORT is set (skipped otherwise).
final class ManualServerTests: XCTestCase {
    func testManualServer() throws {
        guard let p = ProcessInfo.processInfo.environment["HTTPFRONT_MANUAL_PORT"], let port = Int(p) else {
            throw XCTSkip("set HTTPFRONT_MANUAL_PORT to run a server for manual testing")
        }
        let server = try makeServer {
            $0.port = port
            $0.maxBodyBytes = 1000
        }
        defer { server.stop() }
        sleep(UInt32(ProcessInfo.processInfo.environment["HTTPFRONT_MANUAL_SECONDS"].flatMap { UInt32($0) } ?? 60))
    }
}
