import Foundation
import XCTest

/// The PostgreSQL server the tests use: `KVCONNECTD_TEST_PG_URL` (the
/// Makefile's test target starts a throwaway cluster with
/// scripts/pg-test-cluster.sh and sets it). Without it the PostgreSQL tests
/// are skipped, visibly.
enum PGTestCluster {
    static func url() throws -> String {
        guard let u = ProcessInfo.processInfo.environment["KVCONNECTD_TEST_PG_URL"], !u.isEmpty else {
            throw XCTSkip("KVCONNECTD_TEST_PG_URL is not set: PostgreSQL tests skipped (make test sets it)")
        }
        return u
    }
}
