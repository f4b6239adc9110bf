// Console sign-in sessions. The browser holds only a random session id in
// an HttpOnly cookie; the access token never reaches page-readable storage.
// A session keeps the token's SHA-256 (as the daemon does), so every request
// re-checks it against the tenants' current tokens: a token removed by a
// SIGHUP reload ends its console sessions too.

import Crypto
import Foundation
import Synchronization

struct ConsoleSession: Sendable {
    let id: String
    /// Sent back by the page in `x-csrf-token` on every change.
    let csrfToken: String
    let tokenDigest: [UInt8]
    let createdAt: Double
    var lastUsed: Double
}

final class SessionStore: Sendable {
    let idleSeconds: Double
    let maxSeconds: Double
    let maxSessions: Int
    private let clock: @Sendable () -> Double
    private let sessions = Mutex<[String: ConsoleSession]>([:])

    init(
        idleSeconds: Double, maxSeconds: Double, maxSessions: Int = 10_000,
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) {
        self.idleSeconds = idleSeconds
        self.maxSeconds = maxSeconds
        self.maxSessions = maxSessions
        self.clock = clock
    }

    static func randomToken() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
    }

    func create(tokenDigest: [UInt8]) -> ConsoleSession {
        let now = clock()
        let s = ConsoleSession(
            id: Self.randomToken(), csrfToken: Self.randomToken(), tokenDigest: tokenDigest,
            createdAt: now, lastUsed: now)
        sessions.withLock { sessions in
            if sessions.count >= maxSessions {
                sessions = sessions.filter { live($0.value, now) }
                // Still full: the least recently used session goes.
                if sessions.count >= maxSessions,
                    let oldest = sessions.min(by: { $0.value.lastUsed < $1.value.lastUsed })
                {
                    sessions[oldest.key] = nil
                }
            }
            sessions[s.id] = s
        }
        return s
    }

    /// The live session with this id (its idle timer restarts), or nil.
    func lookup(_ id: String) -> ConsoleSession? {
        let now = clock()
        return sessions.withLock { sessions in
            guard var s = sessions[id] else { return nil }
            guard live(s, now) else {
                sessions[id] = nil
                return nil
            }
            s.lastUsed = now
            sessions[id] = s
            return s
        }
    }

    /// Like `lookup`, without counting as use (an open live view does not
    /// keep an otherwise idle session alive).
    func peek(_ id: String) -> ConsoleSession? {
        let now = clock()
        return sessions.withLock { $0[id].flatMap { live($0, now) ? $0 : nil } }
    }

    func remove(_ id: String) {
        sessions.withLock { $0[id] = nil }
    }

    var count: Int { sessions.withLock { $0.count } }

    private func live(_ s: ConsoleSession, _ now: Double) -> Bool {
        now - s.lastUsed < idleSeconds && now - s.createdAt < maxSeconds
    }
}
