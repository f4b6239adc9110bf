import Foundation
import Synchronization

/// The keys that sign and verify data-plane tokens, per database.
///
/// A SQLite database uses the daemon's key file (the default signer). A
/// database served by several daemons (PostgreSQL) keeps its keys in the
/// database, so a token issued by one daemon is accepted by all: the daemon
/// installs them here and a `refresh` function re-reads them. After a
/// rotation the new key signs and the previous one still verifies, so no
/// client is logged out; a daemon that has not yet seen the new key re-reads
/// the keys when a token fails to verify (at most once per `refreshInterval`).
public final class SigningKeyring: Sendable {
    public typealias Refresh = @Sendable () throws -> [[UInt8]]

    private struct Entry {
        var signer: TokenSigner
        var refresh: Refresh?
        var lastRefresh: Date
    }

    private struct State {
        var byDatabase: [String: Entry] = [:]
        var generation: UInt64 = 0
    }

    private let state = Mutex(State())
    private let defaultSigner: TokenSigner
    private let refreshInterval: TimeInterval

    public init(default signer: TokenSigner, refreshInterval: TimeInterval = 1) {
        self.defaultSigner = signer
        self.refreshInterval = refreshInterval
    }

    /// Changes whenever a database's keys change; cached verifications of an
    /// older generation are dropped (a retired key must stop verifying).
    public var generation: UInt64 { state.withLock { $0.generation } }

    /// Installs a database's own keys (`keys[0]` signs) and how to re-read them.
    public func setKeys(_ keys: [[UInt8]], forDatabase id: String, refresh: Refresh? = nil) {
        state.withLock { s in
            let old = s.byDatabase[id]
            s.byDatabase[id] = Entry(
                signer: TokenSigner(keys: keys), refresh: refresh ?? old?.refresh, lastRefresh: Date())
            s.generation &+= 1
        }
    }

    public func signer(forDatabase id: String) -> TokenSigner {
        state.withLock { $0.byDatabase[id]?.signer } ?? defaultSigner
    }

    /// Re-reads a database's keys now (the periodic refresh and a failed
    /// verification). Returns true if they changed. Errors (database
    /// unreachable) keep the keys it has.
    @discardableResult
    public func refresh(database id: String, force: Bool = true) -> Bool {
        let due: Refresh? = state.withLock { s in
            guard let entry = s.byDatabase[id], let refresh = entry.refresh,
                force || Date().timeIntervalSince(entry.lastRefresh) >= refreshInterval
            else { return nil }
            s.byDatabase[id]?.lastRefresh = Date()
            return refresh
        }
        // Re-read outside the lock: it may query the database.
        guard let refresh = due, let keys = try? refresh(), !keys.isEmpty else { return false }
        return state.withLock { s in
            guard s.byDatabase[id]?.signer.sameKeys(as: keys) == false else { return false }
            s.byDatabase[id]?.signer = TokenSigner(keys: keys)
            s.generation &+= 1
            return true
        }
    }

    public func sign(_ token: DataPlaneToken) -> String {
        signer(forDatabase: token.databaseId).sign(token)
    }

    /// Verifies with the keys of the database the token names; on a bad
    /// signature the keys are re-read once (another daemon may have rotated).
    public func verify(_ text: String, nowMs: Int64) throws(TokenSigner.VerifyError) -> DataPlaneToken {
        guard let id = TokenSigner.claimedDatabaseId(text) else { throw .malformed }
        do {
            return try signer(forDatabase: id).verify(text, nowMs: nowMs)
        } catch .badSignature {
            guard refresh(database: id, force: false) else { throw .badSignature }
            return try signer(forDatabase: id).verify(text, nowMs: nowMs)
        }
    }
}

extension TokenSigner {
    func sameKeys(as keys: [[UInt8]]) -> Bool { self.keys == keys }
}
