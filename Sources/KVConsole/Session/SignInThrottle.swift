import Foundation
import Synchronization

/// Failed sign-ins per client address: after `maxFailures` within
/// `windowSeconds` the address gets 429 until the oldest failure ages out.
/// (Every failure is also answered late; see ConsoleService.)
final class SignInThrottle: Sendable {
    let maxFailures: Int
    let windowSeconds: Double
    private let clock: @Sendable () -> Double
    private let failures = Mutex<[String: [Double]]>([:])
    /// Bounds memory under a spray of addresses.
    private let maxAddresses = 100_000

    init(
        maxFailures: Int, windowSeconds: Double,
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) {
        self.maxFailures = maxFailures
        self.windowSeconds = windowSeconds
        self.clock = clock
    }

    /// Seconds until this address may try again; nil when it may now.
    func retryAfter(_ address: String) -> Int? {
        let now = clock()
        return failures.withLock { failures in
            let recent = (failures[address] ?? []).filter { now - $0 < windowSeconds }
            failures[address] = recent.isEmpty ? nil : recent
            guard recent.count >= maxFailures, let oldest = recent.first else { return nil }
            return max(1, Int((oldest + windowSeconds - now).rounded(.up)))
        }
    }

    func recordFailure(_ address: String) {
        let now = clock()
        failures.withLock { failures in
            if failures.count >= maxAddresses && failures[address] == nil {
                failures = failures.filter { $0.value.contains { now - $0 < windowSeconds } }
                if failures.count >= maxAddresses { failures.removeAll() }
            }
            failures[address, default: []].append(now)
        }
    }

    func recordSuccess(_ address: String) {
        failures.withLock { $0[address] = nil }
    }
}
