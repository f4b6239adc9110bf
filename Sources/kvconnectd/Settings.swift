import Configuration
import Foundation
import KVConnect
import Logging

/// The daemon's effective settings: every setting of `SettingKey` (read as
/// `settings.maxBodyBytes`), plus what follows from several of them together
/// (the served databases with their tokens, the webhook secret). The rules
/// that join settings live here; a single setting's validation lives in its
/// kind.
@dynamicMemberLookup
struct Settings: Sendable {
    let values: SettingValues
    /// Every served database; one ("default") unless `databases_file` is set.
    var databases: [DatabaseSpec] = []
    /// `database`, or the first database of `databases_file`.
    var databasePath: String
    var accessToken = ""
    var accessTokenSource = ""
    /// HMAC key for webhook signatures (never logged).
    var queueWebhookSecret: [UInt8] = []

    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    static let minimumTokenLength = 12

    subscript<V>(_ spec: SettingSpec<V>) -> V { values[spec] }
    subscript<V>(dynamicMember keyPath: KeyPath<SettingKey.Type, SettingSpec<V>>) -> V {
        values[SettingKey.self[keyPath: keyPath]]
    }

    /// Sets a component configuration's fields from the settings bound to it.
    func configure<Root: ComponentConfiguration>(_ root: inout Root) { values.configure(&root) }

    init(values: SettingValues) {
        self.values = values
        self.databasePath = values[SettingKey.database]
    }

    /// - Parameter flags: text by setting key, only the flags given.
    static func resolve(flags: [String: String], environment: [String: String] = ProcessInfo.processInfo.environment)
        async throws -> Settings
    {
        // The config file is itself a setting (flag or environment).
        let located = try SettingValues.resolve([SettingKey.config], flags: flags, environment: environment, file: nil)
        var file: (any ConfigProvider)? = nil
        if let path = located[SettingKey.config] { file = try await SettingValues.configFile(path) }
        var s = Settings(
            values: try SettingValues.resolve(SettingKey.all, flags: flags, environment: environment, file: file))
        try s.joinSettings(flags: flags, environment: environment)
        return s
    }

    /// The rules over several settings, and the databases with their tokens.
    private mutating func joinSettings(flags: [String: String], environment env: [String: String]) throws {
        // A password on the command line is visible to every local user (ps).
        for spec in [SettingKey.database, SettingKey.replicaDatabase] as [any AnySettingSpec] {
            if let given = flags[spec.key], PostgresURI.isPostgres(given), try PostgresURI(given).hasPassword {
                throw Invalid(
                    description:
                        """
                        \(spec.flag) holds a password, which every local user can read in the process list: \
                        put the URI in the config file or \(spec.environmentVariable), or the password in \
                        database_password_file, PGPASSWORD or a .pgpass file
                        """
                )
            }
        }
        if (self.tlsCertFile == nil) != (self.tlsKeyFile == nil) {
            throw Invalid(description: "tls_cert_file and tls_key_file must be set together")
        }
        if self.queueWebhookURL != nil {
            guard let path = self.queueWebhookSecretFile else {
                throw Invalid(
                    description:
                        "queue_webhook_url is set but queue_webhook_secret_file is not: deliveries must be signed")
            }
            guard let secret = FileManager.default.contents(atPath: path) else {
                throw Invalid(description: "cannot read queue webhook secret file \(path)")
            }
            let trimmed = String(decoding: secret, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard trimmed.utf8.count >= 16 else {
                throw Invalid(
                    description: "queue webhook secret in \(path) is too short: at least 16 characters required")
            }
            queueWebhookSecret = Array(trimmed.utf8)
        }
        if let dbFile = self.databasesFile.map({ DatabaseSpecs.expand($0, env) }) {
            guard let specs = try DatabaseSpecs.load(configFile: dbFile, environment: env) else {
                throw Invalid(description: "databases file \(dbFile) has no databases: list")
            }
            if self.replicaDatabase != nil {
                throw Invalid(
                    description:
                        """
                        replica_database is for the single database; with databases_file give each entry its \
                        own replica:
                        """
                )
            }
            databases = specs
            databasePath = specs[0].path
            accessTokenSource = "databases file \(dbFile)"
            return
        }
        // Single database: the access token from a file (flag, env or config),
        // else KVCONNECTD_ACCESS_TOKEN, else DENO_KV_ACCESS_TOKEN.
        if let path = self.accessTokenFile.map({ DatabaseSpecs.expand($0, env) }) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw Invalid(description: "cannot read access token file \(path)")
            }
            accessToken = text.trimmingCharacters(in: .whitespacesAndNewlines)
            accessTokenSource = "file \(path)"
        } else if let t = values[SettingKey.accessToken] {
            accessToken = t.trimmingCharacters(in: .whitespacesAndNewlines)
            accessTokenSource = SettingKey.accessToken.environmentVariable
        } else if let t = env["DENO_KV_ACCESS_TOKEN"] {
            accessToken = t.trimmingCharacters(in: .whitespacesAndNewlines)
            accessTokenSource = "DENO_KV_ACCESS_TOKEN"
        } else {
            throw Invalid(
                description: "no access token: set --access-token-file, KVCONNECTD_ACCESS_TOKEN or DENO_KV_ACCESS_TOKEN"
            )
        }
        if accessToken.count < Self.minimumTokenLength {
            throw Invalid(
                description:
                    """
                    access token from \(accessTokenSource) is too short: at least \(Self.minimumTokenLength) \
                    characters required
                    """
            )
        }
        var tokens = [AccessToken(secret: accessToken)]
        var sources = [accessTokenSource + " (read-write)"]
        if let path = self.readOnlyAccessTokenFile.map({ DatabaseSpecs.expand($0, env) }) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                text.trimmingCharacters(in: .whitespacesAndNewlines).count >= Self.minimumTokenLength
            else {
                throw Invalid(
                    description:
                        """
                        cannot read a read-only access token of at least \(Self.minimumTokenLength) \
                        characters from \(path)
                        """
                )
            }
            tokens.append(AccessToken(secret: text.trimmingCharacters(in: .whitespacesAndNewlines), scope: .readOnly))
            sources.append("file \(path) (read-only)")
        }
        let passwordFile = self.databasePasswordFile.map { DatabaseSpecs.expand($0, env) }
        databases = [
            DatabaseSpec(
                name: "default", path: databasePath, tokens: tokens, tokenSources: sources, passwordFile: passwordFile,
                replica: self.replicaDatabase)
        ]
        try DatabaseSpecs.validate(databases)
    }

    /// check-config's lines, in table order; secrets masked.
    var summary: [(String, String)] { SettingKey.all.flatMap { $0.summaryLines(self) } }

    var databaseLocation: DatabaseLocation { (try? DatabaseLocation(databasePath)) ?? .sqlite(path: databasePath) }

    /// Beside the (first) SQLite database; PostgreSQL databases keep their keys in the database.
    var defaultSigningKeyFile: String {
        let sqlite = databases.compactMap { if case .sqlite(let p) = $0.location { p } else { nil } }.first
        return ((sqlite ?? databasePath) as NSString).deletingLastPathComponent.appending("/signing.key")
    }

    /// Whether the daemon needs the key file: some database is SQLite, or it was set.
    var usesSigningKeyFile: Bool {
        self.signingKeyFile != nil || databases.contains { !$0.location.isPostgres }
    }
}

extension DatabaseSpec {
    /// check-config's line for this database (password and tokens masked).
    var summary: String {
        let password = passwordFile.map { "; password from file \($0) (masked)" } ?? ""
        let replica = replica.map { "; replica: \(ReplicaSettings.display($0))" } ?? ""
        return "\(location.display)\(password)\(replica); tokens: \(tokenSources.joined(separator: ", "))"
    }
}
