import Foundation

/// Data-plane tokens already verified, by their exact text. Clients send the
/// same token on every request for an hour, and re-verifying it (base64url
/// decode + HMAC) was the largest cost of a point read in the profile. Only a
/// token whose signature checked out is stored, so the cache cannot admit a
/// forgery; expiry is still checked on every hit. Bounded: cleared when full,
/// and when the signing keys change (a retired key must stop verifying).
final class VerifiedTokenCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: DataPlaneToken] = [:]
    private var generation: UInt64 = 0
    private let capacity: Int

    init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    func verify(_ text: String, nowMs: Int64, signer: TokenSigner) throws(TokenSigner.VerifyError) -> DataPlaneToken {
        try verify(text, nowMs: nowMs, generation: 0) { () throws(TokenSigner.VerifyError) in
            try signer.verify(text, nowMs: nowMs)
        }
    }

    func verify(_ text: String, nowMs: Int64, keyring: SigningKeyring) throws(TokenSigner.VerifyError) -> DataPlaneToken
    {
        try verify(text, nowMs: nowMs, generation: keyring.generation) { () throws(TokenSigner.VerifyError) in
            try keyring.verify(text, nowMs: nowMs)
        }
    }

    private func verify(
        _ text: String, nowMs: Int64, generation current: UInt64,
        _ check: () throws(TokenSigner.VerifyError) -> DataPlaneToken
    ) throws(TokenSigner.VerifyError) -> DataPlaneToken {
        lock.lock()
        if generation != current {
            entries.removeAll(keepingCapacity: true)
            generation = current
        }
        let hit = entries[text]
        lock.unlock()
        if let hit {
            if hit.expiresAtMs <= nowMs { throw .expired }
            return hit
        }
        let token = try check()
        lock.lock()
        if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
        if generation == current { entries[text] = token }
        lock.unlock()
        return token
    }
}
