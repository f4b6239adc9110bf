import Foundation
import KVPostgres

/// PostgreSQL keeps the token signing keys in the database (pg-core's
/// `signing_keys` table), shared by every daemon serving it.
extension PostgresStore: SharedKeyStorage {
    func sharedSigningKeys() throws -> [[UInt8]] { try signingKeys().map(\.secret) }
    func ensureSharedSigningKey(_ secret: [UInt8]) throws -> [[UInt8]] {
        try ensureSigningKey(keyId: UUID().uuidString.lowercased(), secret: secret).map(\.secret)
    }
}
