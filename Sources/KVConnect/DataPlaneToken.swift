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
    private let secret: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: secret) }
    private static let prefix = "kvc1"

    /// `secret` should be at least 32 random bytes.
    public init(secret: [UInt8]) {
        self.secret = secret
    }

    public func sign(_ token: DataPlaneToken) -> String {
        let payload = "\(token.databaseId).\(token.expiresAtMs).\(token.scope.rawValue)"
        let mac = HMAC<SHA256>.authenticationCode(for: Array(payload.utf8), using: key)
        return "\(Self.prefix).\(base64url(Array(payload.utf8))).\(base64url(Array(mac)))"
    }

    public enum VerifyError: Error, Equatable {
        case malformed, badSignature, expired
    }

    /// Checks the signature first (constant time), then expiry.
    public func verify(_ text: String, nowMs: Int64) throws(VerifyError) -> DataPlaneToken {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == Self.prefix,
              let payload = unbase64url(parts[1]), let mac = unbase64url(parts[2]) else {
            throw .malformed
        }
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: payload, using: key) else {
            throw .badSignature
        }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: ".")
        guard fields.count == 3, let exp = Int64(fields[1]),
              let scope = DataPlaneToken.Scope(rawValue: String(fields[2])) else {
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
