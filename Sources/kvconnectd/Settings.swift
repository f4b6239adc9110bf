import Configuration
import SystemPackage
import Foundation
import KVConnect
import Logging

/// The daemon's effective settings, resolved from flags > environment
/// (KVCONNECTD_*) > YAML config file > defaults by swift-configuration.
struct Settings: Sendable {
    var host = "127.0.0.1"
    var port = 4512
    var databasePath = "./data/kv.sqlite3"
    var accessToken = ""
    var accessTokenSource = ""
    var signingKeyFile: String?
    var tokenLifetimeSeconds: Int64 = 3600
    var maxBodyBytes = 1_048_576
    var ioThreads = 2
    /// HTTP front hardening (HTTPServerConfiguration).
    var maxConnections = 10_000
    var maxConnectionsPerIP = 1000
    /// SETTINGS_MAX_CONCURRENT_STREAMS: bounds one Deno.Kv handle's open watches.
    var http2MaxConcurrentStreams = 100_000
    var requestTimeoutSeconds = 30
    var idleTimeoutSeconds = 120
    var synchronousFull = true
    var publicURL: String?
    var watchPingIntervalMs = 5000
    var shutdownGraceSeconds = 10
    /// PEM certificate chain and private key: both set = HTTPS only on the port.
    var tlsCertFile: String?
    var tlsKeyFile: String?
    var logLevel: Logger.Level = .info
    /// text (swift-log's stream format) or json (one object per line).
    var logFormat = "text"
    /// Every served database; one ("default") unless the config file has `databases:`.
    var databases: [DatabaseSpec] = []
    var configFile: String?
    /// Queue push target; nil = no push (pull endpoints only).
    var queueWebhookURL: URL?
    var queueWebhookSecretFile: String?
    /// HMAC key for webhook signatures (never logged).
    var queueWebhookSecret: [UInt8] = []
    var queueWebhookTimeoutMs = 10_000
    var queueConcurrency = 16
    var queueVisibilityTimeoutMs = 30_000
    var queueMaxLeases = 10
    var queueLongPollMaxMs = 20_000
    /// The web console (/console/): on by default, on the main listener
    /// unless `console_listen` names another address.
    var consoleEnabled = true
    var consoleListen: (host: String, port: Int)?
    /// Eventual reads fall back to the primary when the standby lags more (0 = no bound).
    var replicaMaxLagMs = 10_000

    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    static let minimumTokenLength = 12

    /// Flag values by config key (only flags the user gave).
    static func resolve(flags: [String: String], configFile: String?) async throws -> Settings {
        var providers: [any ConfigProvider] = []
        var flagValues: [AbsoluteConfigKey: ConfigValue] = [:]
        for (k, v) in flags { flagValues[AbsoluteConfigKey([k])] = ConfigValue(.string(v), isSecret: false) }
        providers.append(InMemoryProvider(name: "flags", values: flagValues))
        let env = EnvironmentVariablesProvider()
        providers.append(KeyMappingProvider(upstream: env) { $0.prepending(["kvconnectd"]) })
        let env0 = ProcessInfo.processInfo.environment
        let file = configFile ?? env0["KVCONNECTD_CONFIG"]
        if let file {
            guard FileManager.default.fileExists(atPath: file) else {
                throw Invalid(description: "config file not found: \(file)")
            }
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(file)))
            } catch {
                throw Invalid(description: "config file \(file) is not valid YAML: \(error)")
            }
        }
        let config = ConfigReader(providers: providers)
        var s = Settings()

        (s.host, s.port) = try hostPort(config.string(forKey: "listen", default: "127.0.0.1:4512"), key: "listen")
        switch config.string(forKey: "console", default: "true").lowercased() {
        case "true", "on", "yes": s.consoleEnabled = true
        case "false", "off", "no": s.consoleEnabled = false
        case let other: throw Invalid(description: "invalid console '\(other)': expected true or false")
        }
        if let text = config.string(forKey: "console_listen"), !text.isEmpty {
            s.consoleListen = try hostPort(text, key: "console_listen")
        }
        s.databasePath = config.string(forKey: "database", default: s.databasePath)
        // A password on the command line is visible to every local user (ps).
        if let given = flags["database"], PostgresURI.isPostgres(given), try PostgresURI(given).hasPassword {
            throw Invalid(description: "--database holds a password, which every local user can read in the process list: put the URI in the config file or KVCONNECTD_DATABASE, or the password in database_password_file, PGPASSWORD or a .pgpass file")
        }
        let passwordFile = config.string(forKey: "database_password_file").map { DatabaseSpecs.expand($0, env0) }
        let replica = try ReplicaSettings.replicaDatabase(config.string(forKey: "replica_database"), flag: flags["replica_database"])
        s.replicaMaxLagMs = try int(config, "replica_max_lag_ms", s.replicaMaxLagMs, min: 0)
        s.signingKeyFile = config.string(forKey: "signing_key_file")
        s.publicURL = config.string(forKey: "public_url")
        s.tlsCertFile = config.string(forKey: "tls_cert_file")
        s.tlsKeyFile = config.string(forKey: "tls_key_file")
        if (s.tlsCertFile == nil) != (s.tlsKeyFile == nil) {
            throw Invalid(description: "tls_cert_file and tls_key_file must be set together")
        }
        s.tokenLifetimeSeconds = Int64(try int(config, "token_lifetime_seconds", 3600, min: 10))
        s.maxBodyBytes = try int(config, "max_body_bytes", s.maxBodyBytes, min: 1024)
        s.ioThreads = try int(config, "io_threads", s.ioThreads, min: 1)
        s.maxConnections = try int(config, "max_connections", s.maxConnections, min: 1)
        s.maxConnectionsPerIP = try int(config, "max_connections_per_ip", s.maxConnectionsPerIP, min: 1)
        s.http2MaxConcurrentStreams = try int(config, "http2_max_concurrent_streams", s.http2MaxConcurrentStreams,
                                              min: 1, max: Int(Int32.max))
        s.requestTimeoutSeconds = try int(config, "request_timeout_seconds", s.requestTimeoutSeconds, min: 1)
        s.idleTimeoutSeconds = try int(config, "idle_timeout_seconds", s.idleTimeoutSeconds, min: 1)
        s.watchPingIntervalMs = try int(config, "watch_ping_interval_ms", s.watchPingIntervalMs, min: 100)
        s.shutdownGraceSeconds = try int(config, "shutdown_grace_seconds", s.shutdownGraceSeconds, min: 0)
        s.queueWebhookTimeoutMs = try int(config, "queue_webhook_timeout_ms", s.queueWebhookTimeoutMs, min: 10)
        s.queueConcurrency = try int(config, "queue_concurrency", s.queueConcurrency, min: 1)
        s.queueVisibilityTimeoutMs = try int(config, "queue_visibility_timeout_ms", s.queueVisibilityTimeoutMs, min: 100)
        s.queueMaxLeases = try int(config, "queue_max_leases", s.queueMaxLeases, min: 0)
        s.queueLongPollMaxMs = try int(config, "queue_long_poll_max_ms", s.queueLongPollMaxMs, min: 0)
        if let text = config.string(forKey: "queue_webhook_url"), !text.isEmpty {
            guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
                  url.host != nil else {
                throw Invalid(description: "invalid queue_webhook_url '\(text)': expected an http:// or https:// URL")
            }
            s.queueWebhookURL = url
            guard let path = config.string(forKey: "queue_webhook_secret_file") else {
                throw Invalid(description: "queue_webhook_url is set but queue_webhook_secret_file is not: deliveries must be signed")
            }
            guard let secret = FileManager.default.contents(atPath: path) else {
                throw Invalid(description: "cannot read queue webhook secret file \(path)")
            }
            let trimmed = String(decoding: secret, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard trimmed.utf8.count >= 16 else {
                throw Invalid(description: "queue webhook secret in \(path) is too short: at least 16 characters required")
            }
            s.queueWebhookSecretFile = path
            s.queueWebhookSecret = Array(trimmed.utf8)
        }
        switch config.string(forKey: "synchronous", default: "full").lowercased() {
        case "full": s.synchronousFull = true
        case "normal": s.synchronousFull = false
        case let other: throw Invalid(description: "invalid synchronous mode '\(other)': expected full or normal")
        }
        let level = config.string(forKey: "log_level", default: "info")
        guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
            throw Invalid(description: "invalid log level '\(level)': expected trace, debug, info, notice, warning, error or critical")
        }
        s.logLevel = parsed
        s.logFormat = config.string(forKey: "log_format", default: "text").lowercased()
        guard ["text", "json"].contains(s.logFormat) else {
            throw Invalid(description: "invalid log format '\(s.logFormat)': expected text or json")
        }

        s.configFile = file
        if let dbFile = config.string(forKey: "databases_file").map({ DatabaseSpecs.expand($0, env0) }) {
            guard let specs = try DatabaseSpecs.load(configFile: dbFile, environment: env0) else {
                throw Invalid(description: "databases file \(dbFile) has no databases: list")
            }
            if replica != nil {
                throw Invalid(description: "replica_database is for the single database; with databases_file give each entry its own replica:")
            }
            s.databases = specs
            s.databasePath = specs[0].path
            s.accessTokenSource = "databases file \(dbFile)"
            return s
        }
        // Single database: the access token from a file (flag, env or config),
        // else KVCONNECTD_ACCESS_TOKEN, else DENO_KV_ACCESS_TOKEN.
        if let path = config.string(forKey: "access_token_file").map({ DatabaseSpecs.expand($0, env0) }) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw Invalid(description: "cannot read access token file \(path)")
            }
            s.accessToken = text.trimmingCharacters(in: .whitespacesAndNewlines)
            s.accessTokenSource = "file \(path)"
        } else if let t = env0["KVCONNECTD_ACCESS_TOKEN"] {
            s.accessToken = t.trimmingCharacters(in: .whitespacesAndNewlines)
            s.accessTokenSource = "KVCONNECTD_ACCESS_TOKEN"
        } else if let t = env0["DENO_KV_ACCESS_TOKEN"] {
            s.accessToken = t.trimmingCharacters(in: .whitespacesAndNewlines)
            s.accessTokenSource = "DENO_KV_ACCESS_TOKEN"
        } else {
            throw Invalid(description: "no access token: set --access-token-file, KVCONNECTD_ACCESS_TOKEN or DENO_KV_ACCESS_TOKEN")
        }
        if s.accessToken.count < minimumTokenLength {
            throw Invalid(description: "access token from \(s.accessTokenSource) is too short: at least \(minimumTokenLength) characters required")
        }
        var tokens = [AccessToken(secret: s.accessToken)]
        var sources = [s.accessTokenSource + " (read-write)"]
        if let path = config.string(forKey: "read_only_access_token_file").map({ DatabaseSpecs.expand($0, env0) }) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                  text.trimmingCharacters(in: .whitespacesAndNewlines).count >= minimumTokenLength else {
                throw Invalid(description: "cannot read a read-only access token of at least \(minimumTokenLength) characters from \(path)")
            }
            tokens.append(AccessToken(secret: text.trimmingCharacters(in: .whitespacesAndNewlines), scope: .readOnly))
            sources.append("file \(path) (read-only)")
        }
        s.databases = [DatabaseSpec(name: "default", path: s.databasePath, tokens: tokens, tokenSources: sources,
                                    passwordFile: passwordFile, replica: replica)]
        try DatabaseSpecs.validate(s.databases)
        return s
    }

    private static func hostPort(_ text: String, key: String) throws -> (host: String, port: Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else {
            throw Invalid(description: "invalid \(key) address '\(text)': expected HOST:PORT")
        }
        return (String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port)
    }

    private static func int(_ config: ConfigReader, _ key: String, _ def: Int, min: Int, max: Int = .max) throws -> Int {
        guard let text = config.string(forKey: ConfigKey(key)) else { return def }
        guard let v = Int(text), v >= min, v <= max else {
            let range = max == .max ? ">= \(min)" : "from \(min) to \(max)"
            throw Invalid(description: "invalid \(key) '\(text)': expected an integer \(range)")
        }
        return v
    }

    /// Printable settings with secrets masked.
    var summary: [(String, String)] {
        var head: [(String, String)] = [("listen", "\(host):\(port)"), ("database", databaseLocation.display),
                                        ("access_token", "******** (from \(accessTokenSource))")]
        for d in databases {
            let tokens: String = d.tokenSources.joined(separator: ", ")
            let password = d.passwordFile.map { "; password from file \($0) (masked)" } ?? ""
            let replica = d.replica.map { "; replica: \(ReplicaSettings.display($0))" } ?? ""
            head.append(("database.\(d.name)", "\(d.location.display)\(password)\(replica); tokens: \(tokens)"))
        }
        return head + rest
    }

    private var rest: [(String, String)] {
        [
         ("signing_key_file", usesSigningKeyFile ? signingKeyFile ?? "\(defaultSigningKeyFile) (default)"
            : "(not used: PostgreSQL databases keep their signing keys in the database)"),
         ("token_lifetime_seconds", String(tokenLifetimeSeconds)),
         ("replica_max_lag_ms", replicaMaxLagMs == 0 ? "0 (no bound)" : String(replicaMaxLagMs)),
         ("max_body_bytes", String(maxBodyBytes)), ("io_threads", String(ioThreads)),
         ("max_connections", String(maxConnections)), ("max_connections_per_ip", String(maxConnectionsPerIP)),
         ("http2_max_concurrent_streams", String(http2MaxConcurrentStreams)),
         ("request_timeout_seconds", String(requestTimeoutSeconds)), ("idle_timeout_seconds", String(idleTimeoutSeconds)),
         ("watch_ping_interval_ms", String(watchPingIntervalMs)),
         ("shutdown_grace_seconds", String(shutdownGraceSeconds)),
         ("queue_webhook_url", queueWebhookURL?.absoluteString ?? "(none: pull only)"),
         ("queue_webhook_secret_file", queueWebhookSecretFile.map { "\($0) (secret masked)" } ?? "(none)"),
         ("queue_webhook_timeout_ms", String(queueWebhookTimeoutMs)),
         ("queue_concurrency", String(queueConcurrency)),
         ("queue_visibility_timeout_ms", String(queueVisibilityTimeoutMs)),
         ("queue_max_leases", String(queueMaxLeases)),
         ("queue_long_poll_max_ms", String(queueLongPollMaxMs)),
         ("synchronous", synchronousFull ? "full" : "normal"),
         ("public_url", publicURL ?? "(from the request's Host)"),
         ("tls_cert_file", tlsCertFile ?? "(none: plain HTTP)"), ("tls_key_file", tlsKeyFile ?? "(none)"), ("log_level", logLevel.rawValue),
         ("log_format", logFormat),
         ("console", !consoleEnabled ? "false" : consoleListen.map { "true (on \($0.host):\($0.port))" } ?? "true (on the main listener, /console/)")]
    }

    var databaseLocation: DatabaseLocation { (try? DatabaseLocation(databasePath)) ?? .sqlite(path: databasePath) }

    /// Beside the (first) SQLite database; PostgreSQL databases keep their keys in the database.
    var defaultSigningKeyFile: String {
        let sqlite = databases.compactMap { if case .sqlite(let p) = $0.location { p } else { nil } }.first
        return ((sqlite ?? databasePath) as NSString).deletingLastPathComponent.appending("/signing.key")
    }

    /// Whether the daemon needs the key file: some database is SQLite, or it was set.
    var usesSigningKeyFile: Bool {
        signingKeyFile != nil || databases.contains { !$0.location.isPostgres }
    }
}
