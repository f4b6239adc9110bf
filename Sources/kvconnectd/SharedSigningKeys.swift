import Foundation
import KVConnect
import KVEngine
import Synchronization

/// A backend that keeps data-plane token signing keys in the database
/// (PostgreSQL), so every daemon serving it signs and verifies with the same
/// keys. Newest first: the first key signs.
protocol SharedKeyStorage: KVStorage {
    func sharedSigningKeys() throws -> [[UInt8]]
    /// Stores `secret` if the database has no key yet; returns the keys.
    func ensureSharedSigningKey(_ secret: [UInt8]) throws -> [[UInt8]]
}

/// Installs a database's shared keys in the keyring and re-reads them every
/// `refreshSeconds`, so a key added by `rotate-signing-key` starts signing on
/// every daemon within seconds; the previous key keeps verifying.
final class SharedSigningKeys: Sendable {
    static let refreshSeconds: TimeInterval = 5
    /// In a Mutex only because a dispatch source is not Sendable.
    private let timer = Mutex<DispatchSourceTimer?>(nil)

    /// nil for a backend without shared keys (SQLite: the key file).
    static func install(for store: any KVStorage, in keyring: SigningKeyring) throws -> SharedSigningKeys? {
        guard let shared = store as? any SharedKeyStorage else { return nil }
        return try SharedSigningKeys(store: shared, keyring: keyring)
    }

    private init(store: any SharedKeyStorage, keyring: SigningKeyring) throws {
        let keys = try store.ensureSharedSigningKey(try SigningKey.random())
        let id = store.databaseId
        keyring.setKeys(keys, forDatabase: id) { [weak store] in try store?.sharedSigningKeys() ?? [] }
        timer.withLock { timer in
            let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
            t.schedule(deadline: .now() + Self.refreshSeconds, repeating: Self.refreshSeconds)
            t.setEventHandler { keyring.refresh(database: id) }
            t.resume()
            timer = t
        }
    }

    func stop() { timer.withLock { $0?.cancel() } }
}
