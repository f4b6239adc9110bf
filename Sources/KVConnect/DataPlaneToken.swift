import Crypto
import Foundation

/// The data-plane credential handed out by the metadata exchange. It is not
/// the access token: an HMAC-SHA256-signed statement "database D, scope S,
/// valid until T", so the data path needs no lookup and a leaked one expires.
public struct DataPlaneToken: Sendable, Equatable {
    public enum Scope: String, Sendable { case readWrite = "rw", readOnly = "ro" }

    public var databaseId: String
    public var expiresAtMs: Int64
    public var scope: Scope

    public init(databaseId: String, expiresAtMs: Int64, scope: Scope = .readWrite) {
        self.databaseId = databaseId
        self.expiresAtMs = expiresAtMs
        self.scope = scope
    }
}

public struct TokenSigner: Sendable {
    /// The first key signs; every key verifies (current + previous after a
    /// rotation, so tokens signed before it stay valid until they expire).
    let keys: [[UInt8]]
    private static let prefix = "kvc1"

    /// `secret` should be at least 32 random bytes.
    public init(secret: [UInt8]) {
        self.keys = [secret]
    }

    /// `keys[0]` signs; all verify. At least one key.
    public init(keys: [[UInt8]]) {
        precondition(!keys.isEmpty, "a token signer needs a key")
        self.keys = keys
    }

    public func sign(_ token: DataPlaneToken) -> String {
        let payload = "\(token.databaseId).\(token.expiresAtMs).\(token.scope.rawValue)"
        let mac = HMAC<SHA256>.authenticationCode(for: Array(payload.utf8), using: SymmetricKey(data: keys[0]))
        return "\(Self.prefix).\(base64url(Array(payload.utf8))).\(base64url(Array(mac)))"
    }

    /// The database id a token claims, read without verifying it: only to
    /// pick the keys to verify it with.
    public static func claimedDatabaseId(_ text: String) -> String? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == prefix, let payload = unbase64url(parts[1]),
            let dot = payload.firstIndex(of: UInt8(ascii: "."))
        else { return nil }
        return String(decoding: payload[..<dot], as: UTF8.self)
    }

    public enum VerifyError: Error, Equatable {
        case malformed, badSignature, expired
    }

    /// Checks the signature first (constant time), then expiry.
    public func verify(_ text: String, nowMs: Int64) throws(VerifyError) -> DataPlaneToken {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == Self.prefix,
            let payload = unbase64url(parts[1]), let mac = unbase64url(parts[2])
        else {
            throw .malformed
        }
        var valid = false
        for secret in keys
        where HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: payload, using: SymmetricKey(data: secret)) {
            valid = true
        }
        guard valid else { throw .badSignature }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: ".")
        guard fields.count == 3, let exp = Int64(fields[1]),
            let scope = DataPlaneToken.Scope(rawValue: String(fields[2]))
        else {
            throw .malformed
        }
        if exp <= nowMs { throw .expired }
        return DataPlaneToken(databaseId: String(fields[0]), expiresAtMs: exp, scope: scope)
    }
}

func base64url(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

func unbase64url(_ text: Substring) -> [UInt8]? {
    var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while s.count % 4 != 0 { s += "=" }
    guard let d = Data(base64Encoded: s) else { return nil }
    return [UInt8](d)
}

/// Compares secrets without an early exit, so timing does not reveal how
/// many leading bytes matched.
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var diff = UInt8(truncatingIfNeeded: a.count ^ b.count)
    let n = max(a.count, b.count)
    for i in 0..<n {
        let x = i < a.count ? a[i] : 0
        let y = i < b.count ? b[i] : 0
        diff |= x ^ y
    }
    return diff == 0
}
