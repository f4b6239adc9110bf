import Foundation
import KVConnect
import Yams

/// One database the daemon serves and the access tokens that open it.
struct DatabaseSpec: Sendable {
    var name: String
    /// A SQLite file or a PostgreSQL URI (see `location`); may hold a password: show `location.display`.
    var path: String
    var tokens: [AccessToken]
    /// Where each token came from (for check-config; never the secret).
    var tokenSources: [String]
    /// PostgreSQL: file holding the password (else the URI, PGPASSWORD or .pgpass).
    var passwordFile: String? = nil
    /// PostgreSQL: URI of a hot standby serving eventual reads (may hold a password).
    var replica: String? = nil

    /// Checked when the settings are read, so this cannot fail later.
    var location: DatabaseLocation { (try? DatabaseLocation(path)) ?? .sqlite(path: path) }
}

/// The databases file (`databases_file` setting): several databases with
/// scoped tokens. A separate YAML file because swift-configuration's YAML
/// provider takes scalars and lists of scalars only; this list of records is
/// read with Yams. Re-read on SIGHUP.
enum DatabaseSpecs {
    typealias Invalid = Settings.Invalid

    /// nil when the file has no `databases:` key (single-database mode).
    static func load(configFile: String, environment: [String: String]) throws -> [DatabaseSpec]? {
        guard let text = try? String(contentsOfFile: configFile, encoding: .utf8) else {
            throw Invalid(description: "cannot read databases file \(configFile)")
        }
        let root: Any?
        do { root = try Yams.load(yaml: text) } catch {
            throw Invalid(description: "databases file \(configFile) is not valid YAML: \(error)")
        }
        guard let top = root as? [String: Any], let raw = top["databases"] else { return nil }
        guard let list = raw as? [[String: Any]], !list.isEmpty else {
            throw Invalid(description: "databases: expected a non-empty list of {name, path, tokens}")
        }
        var specs: [DatabaseSpec] = []
        for (i, item) in list.enumerated() {
            guard let name = item["name"] as? String, !name.isEmpty else {
                throw Invalid(description: "databases[\(i)]: missing name")
            }
            guard let path = item["path"] as? String, !path.isEmpty else {
                throw Invalid(description: "databases[\(i)] (\(name)): missing path")
            }
            guard let tokenList = item["tokens"] as? [[String: Any]], !tokenList.isEmpty else {
                throw Invalid(
                    description:
                        "databases[\(i)] (\(name)): expected tokens: a non-empty list of {file|env|sha256, scope}")
            }
            var tokens: [AccessToken] = [], sources: [String] = []
            for (j, t) in tokenList.enumerated() {
                let at = "databases[\(i)] (\(name)) tokens[\(j)]"
                let scopeText = (t["scope"] as? String) ?? "read-write"
                let scope: DataPlaneToken.Scope
                switch scopeText {
                case "read-write": scope = .readWrite
                case "read-only": scope = .readOnly
                default:
                    throw Invalid(description: "\(at): invalid scope '\(scopeText)': expected read-write or read-only")
                }
                if let file = t["file"] as? String {
                    let p = expand(file, environment)
                    guard let secret = try? String(contentsOfFile: p, encoding: .utf8) else {
                        throw Invalid(description: "\(at): cannot read token file \(p)")
                    }
                    tokens.append(try checked(secret, at))
                    tokens[tokens.count - 1].scope = scope
                    sources.append("file \(p) (\(scopeText))")
                } else if let env = t["env"] as? String {
                    guard let secret = environment[env] else {
                        throw Invalid(description: "\(at): environment variable \(env) is not set")
                    }
                    tokens.append(try checked(secret, at))
                    tokens[tokens.count - 1].scope = scope
                    sources.append("env \(env) (\(scopeText))")
                } else if let hex = t["sha256"] as? String {
                    guard let token = AccessToken(sha256Hex: hex, scope: scope) else {
                        throw Invalid(description: "\(at): sha256 must be 64 hex characters")
                    }
                    tokens.append(token)
                    sources.append("sha256 \(hex.prefix(8))… (\(scopeText))")
                } else {
                    throw Invalid(description: "\(at): expected one of file, env or sha256")
                }
            }
            let passwordFile = (item["password_file"] as? String).map { expand($0, environment) }
            let replica = (item["replica"] as? String).map { expand($0, environment) }
            specs.append(
                DatabaseSpec(
                    name: name, path: expand(path, environment), tokens: tokens, tokenSources: sources,
                    passwordFile: passwordFile, replica: replica))
        }
        try validate(specs)
        return specs
    }

    static func validate(_ specs: [DatabaseSpec]) throws {
        var names = Set<String>(), paths = Set<String>(), digests: [[UInt8]: String] = [:]
        for s in specs {
            guard names.insert(s.name).inserted else {
                throw Invalid(description: "databases: duplicate name '\(s.name)'")
            }
            let location = try DatabaseLocation(s.path)
            guard paths.insert(location.identity).inserted else {
                throw Invalid(description: "databases: path \(location.display) used twice")
            }
            try ReplicaSettings.validate(s, primary: location)
            if s.passwordFile != nil, !location.isPostgres {
                throw Invalid(description: "databases: '\(s.name)': password_file is only for a PostgreSQL URI")
            }
            if let file = s.passwordFile, !FileManager.default.isReadableFile(atPath: file) {
                throw Invalid(description: "databases: '\(s.name)': cannot read password file \(file)")
            }
            for t in s.tokens {
                if let other = digests[t.sha256], other != s.name {
                    throw Invalid(
                        description:
                            "databases: one access token opens both '\(other)' and '\(s.name)'; tokens must pick one database"
                    )
                }
                digests[t.sha256] = s.name
            }
        }
    }

    private static func checked(_ secret: String, _ at: String) throws -> AccessToken {
        let trimmed = secret.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.count >= Settings.minimumTokenLength else {
            throw Invalid(
                description: "\(at): token is too short: at least \(Settings.minimumTokenLength) characters required")
        }
        return AccessToken(secret: trimmed)
    }

    /// `${VAR}` in paths, e.g. `${CREDENTIALS_DIRECTORY}/app-token` under systemd.
    static func expand(_ path: String, _ environment: [String: String]) -> String {
        var out = path
        while let start = out.range(of: "${"), let end = out.range(of: "}", range: start.upperBound..<out.endIndex) {
            let name = String(out[start.upperBound..<end.lowerBound])
            out.replaceSubrange(start.lowerBound..<end.upperBound, with: environment[name] ?? "")
        }
        return out
    }
}
