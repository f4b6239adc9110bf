import KVEngine

/// One served database and the access tokens that open it. The metadata
/// exchange picks the tenant by access token; the data path by the database
/// id signed into the data-plane token.
public struct Tenant: Sendable {
    public var store: KVStore
    public var databaseId: String { store.databaseId }
    /// Raw access tokens (compared in constant time).
    public var accessTokens: [[UInt8]]

    public init(store: KVStore, accessTokens: [String]) {
        self.store = store
        self.accessTokens = accessTokens.map { Array($0.utf8) }
    }

    func accepts(accessToken: [UInt8]) -> Bool {
        var ok = false
        // No early exit: every configured token is compared.
        for t in accessTokens where constantTimeEquals(t, accessToken) { ok = true }
        return ok
    }
}
