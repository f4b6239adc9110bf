import Foundation

/// What the `database` setting (and a `databases_file` entry's `path`)
/// names: a path means SQLite, a `postgres://` or `postgresql://` URI means
/// PostgreSQL. The one place that decides the backend from the text.
enum DatabaseLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(PostgresURI)

    typealias Invalid = Settings.Invalid

    init(_ text: String) throws {
        if PostgresURI.isPostgres(text) {
            self = .postgres(try PostgresURI(text))
        } else {
            self = .sqlite(path: text)
        }
    }

    /// For logs, `check-config` and metrics: never holds a password.
    var display: String {
        switch self {
        case .sqlite(let path): path
        case .postgres(let uri): uri.masked
        }
    }

    /// Same database, for the "used twice" check.
    var identity: String {
        switch self {
        case .sqlite(let path): URL(fileURLWithPath: path).standardizedFileURL.path
        case .postgres(let uri): uri.masked
        }
    }

    var isPostgres: Bool { if case .postgres = self { true } else { false } }
}

/// A libpq connection URI (`postgresql://[user[:password]@][host][:port][/dbname][?param=value&…]`).
/// libpq reads the password also from `PGPASSWORD`, `PGPASSFILE` or
/// `~/.pgpass`; `sslmode`, `sslrootcert` and the other TLS settings go in
/// the query. The text may hold a password (config file, environment), so
/// it is only ever shown through `masked`.
struct PostgresURI: Sendable, Equatable {
    /// As given; may hold a password. Only for connecting.
    let text: String
    /// Password in the user part or a `password=` parameter.
    let hasPassword: Bool
    let masked: String

    static let sslModes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

    static func isPostgres(_ text: String) -> Bool {
        let lower = text.lowercased()
        return lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://")
    }

    init(_ text: String) throws {
        guard let schemeEnd = text.range(of: "://") else {
            throw Settings.Invalid(description: "invalid PostgreSQL URI: expected postgres://…")
        }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var masked = String(text[..<schemeEnd.upperBound])
        var hasPassword = false
        if let at = authority.lastIndex(of: "@") {
            let userinfo = authority[..<at]
            if let colon = userinfo.firstIndex(of: ":") {
                hasPassword = userinfo.index(after: colon) < userinfo.endIndex
                masked += userinfo[..<colon] + (hasPassword ? ":********" : "")
            } else {
                masked += userinfo
            }
            masked += authority[at...]
        } else {
            masked += authority
        }
        let tail = rest[authorityEnd...]
        if let q = tail.firstIndex(of: "?") {
            masked += tail[..<q] + "?"
            var params: [String] = []
            for pair in tail[tail.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false) {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
                let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
                if name == "password" {
                    hasPassword = hasPassword || !value.isEmpty
                    params.append("password=********")
                    continue
                }
                if name == "sslmode", !Self.sslModes.contains(value) {
                    throw Settings.Invalid(
                        description:
                            "invalid sslmode '\(value)' in PostgreSQL URI \(masked)…: expected one of \(Self.sslModes.joined(separator: ", "))"
                    )
                }
                params.append(String(pair))
            }
            masked += params.joined(separator: "&")
        } else {
            masked += tail
        }
        self.text = text
        self.hasPassword = hasPassword
        self.masked = masked
    }

    /// The URI with `password` set as a query parameter (from a password
    /// file); libpq takes the last value of a repeated parameter.
    func withPassword(_ password: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let encoded = password.addingPercentEncoding(withAllowedCharacters: allowed) ?? password
        return text + (text.contains("?") ? "&" : "?") + "password=" + encoded
    }
}
