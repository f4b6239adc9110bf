import Foundation
import Synchronization

/// Data-plane tokens already verified, by their exact text. Clients send the
/// same token on every request for an hour, and re-verifying it (base64url
/// decode + HMAC) was the largest cost of a point read in the profile. Only a
/// token whose signature checked out is stored, so the cache cannot admit a
/// forgery; expiry is still checked on every hit. Bounded: cleared when full,
/// and when the signing keys change (a retired key must stop verifying).
final class VerifiedTokenCache: Sendable {
    private struct State {
        var entries: [String: DataPlaneToken] = [:]
        /// The keyring generation the entries were verified under.
        var generation: UInt64 = 0
    }

    private let state = Mutex(State())
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
        let hit = state.withLock { s in
            if s.generation != current {
                s.entries.removeAll(keepingCapacity: true)
                s.generation = current
            }
            return s.entries[text]
        }
        if let hit {
            if hit.expiresAtMs <= nowMs { throw .expired }
            return hit
        }
        let token = try check()
        state.withLock { s in
            if s.entries.count >= capacity { s.entries.removeAll(keepingCapacity: true) }
            if s.generation == current { s.entries[text] = token }
        }
        return token
    }
}
