import Foundation

/// Data-plane tokens already verified, by their exact text. Clients send the
/// same token on every request for an hour, and re-verifying it (base64url
/// decode + HMAC) was the largest cost of a point read in the profile. Only a
/// token whose signature checked out is stored, so the cache cannot admit a
/// forgery; expiry is still checked on every hit. Bounded: cleared when full.
final class VerifiedTokenCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: DataPlaneToken] = [:]
    private let capacity: Int

    init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    func verify(_ text: String, nowMs: Int64, signer: TokenSigner) throws(TokenSigner.VerifyError) -> DataPlaneToken {
        lock.lock()
        let hit = entries[text]
        lock.unlock()
        if let hit {
            if hit.expiresAtMs <= nowMs { throw .expired }
            return hit
        }
        let token = try signer.verify(text, nowMs: nowMs)
        lock.lock()
        if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
        entries[text] = token
        lock.unlock()
        return token
    }
}
