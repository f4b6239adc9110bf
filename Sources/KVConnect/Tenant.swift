import Crypto
import Foundation
import KVEngine
import Synchronization

/// An access token as the daemon keeps it: only its SHA-256, so the config
/// may hold hashes and memory never holds the secret longer than needed.
public struct AccessToken: Sendable, Equatable {
    public var sha256: [UInt8]
    public var scope: DataPlaneToken.Scope

    public init(secret: String, scope: DataPlaneToken.Scope = .readWrite) {
        sha256 = Array(SHA256.hash(data: Array(secret.utf8)))
        self.scope = scope
    }

    /// From a hex SHA-256 digest (64 hex characters); nil if malformed.
    public init?(sha256Hex: String, scope: DataPlaneToken.Scope = .readWrite) {
        let hex = Array(sha256Hex.lowercased().utf8)
        guard hex.count == 64 else { return nil }
        var out: [UInt8] = []
        for i in stride(from: 0, to: 64, by: 2) {
            guard let b = UInt8(String(decoding: hex[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            out.append(b)
        }
        sha256 = out
        self.scope = scope
    }
}

/// One served database and the access tokens that open it. The metadata
/// exchange picks the tenant by access token; the data path by the database
/// id signed into the data-plane token. Tokens can be replaced at run time
/// (SIGHUP) without touching open connections.
public final class Tenant: Sendable {
    public let name: String
    public let store: any KVStorage
    /// Eventual reads (the `/replica` handle, the eventual endpoint); nil = none.
    public let replica: ReplicaRoute?
    public var databaseId: String { store.databaseId }
    /// Shared snapshot reads of this database's watch sessions.
    let watchReads: WatchReads
    private let tokens: Mutex<[AccessToken]>

    public init(name: String = "default", store: any KVStorage, tokens: [AccessToken], replica: ReplicaRoute? = nil) {
        self.name = name
        self.store = store
        self.replica = replica
        self.tokens = Mutex(tokens)
        watchReads = WatchReads { [store] in try store.readKeys($0) }
    }

    /// Read-write tokens given in clear (tests, single-database setups).
    public convenience init(store: any KVStorage, accessTokens: [String]) {
        self.init(store: store, tokens: accessTokens.map { AccessToken(secret: $0) })
    }

    public func replaceTokens(_ new: [AccessToken]) {
        tokens.withLock { $0 = new }
    }

    /// The scope of a presented access token, or nil. Compares the digest
    /// against every configured token in constant time, with no early exit.
    public func scope(forPresented digest: [UInt8]) -> DataPlaneToken.Scope? {
        let current = tokens.withLock { $0 }
        var found: DataPlaneToken.Scope?
        for t in current where constantTimeEquals(t.sha256, digest) { found = found ?? t.scope }
        return found
    }
}
