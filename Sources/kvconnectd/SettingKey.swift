import Foundation
import HTTPFront
import KVConnect
import KVEngine
import KVSQLite
import Logging

// The components whose configuration holds the defaults of the settings
// that fill it (one home for each default).
extension HTTPServerConfiguration: ComponentConfiguration { static var defaults: Self { Self() } }
extension ServiceConfiguration: ComponentConfiguration { static var defaults: Self { Self() } }
extension SQLiteStoreOptions: ComponentConfiguration { static var defaults: Self { Self() } }
extension QueuePushOptions: ComponentConfiguration { static var defaults: Self { Self() } }

/// Every setting of `serve` and `check-config`, declared once. The CLI flags
/// and `--help`, the environment variables, the YAML keys, validation,
/// check-config (in this order) and the component configurations are all
/// derived from this table (`Settings` reads a setting as `settings.name`).
enum SettingKey {
    static let all: [any AnySettingSpec] = [
        config, listen, database, databasePasswordFile, replicaDatabase, accessTokenFile, accessToken,
        readOnlyAccessTokenFile, databasesFile, signingKeyFile, tokenLifetimeSeconds, replicaMaxLagMs, maxBodyBytes,
        ioThreads, maxConnections, maxConnectionsPerIP, http2MaxConcurrentStreams, requestTimeoutSeconds,
        idleTimeoutSeconds, watchPingIntervalMs, shutdownGraceSeconds, queueWebhookURL, queueWebhookSecretFile,
        queueWebhookTimeoutMs, queueConcurrency, queueVisibilityTimeoutMs, queueMaxLeases, queueLongPollMaxMs,
        synchronous, publicURL, tlsCertFile, tlsKeyFile, logLevel, logFormat, console, consoleListen
    ]

    // MARK: Where the configuration and the databases are

    static let config = SettingSpec<String?>(
        "config", .text("<file>"), default: nil, sources: [.flag, .environment], summary: .withOther,
        help: "YAML config file (example: config/kvconnectd.yaml).")
    static let listen = SettingSpec<HostPort>(
        "listen", .hostPort,
        sets: .fields(
            of: HTTPServerConfiguration.self, get: { HostPort(host: $0.host, port: $0.port) },
            set: { c, v in (c.host, c.port) = (v.host, v.port) }),
        help: "Listen address HOST:PORT; HTTP/1.1 and HTTP/2 share the port.")
    static let database = SettingSpec<String>(
        "database", .text("<path|uri>"), default: "./data/kv.sqlite3",
        summary: .custom { _, s in s.databaseLocation.display },
        help: """
            SQLite database file, or a postgres:// URI (PostgreSQL; no password on the command line: see \
            --database-password-file).
            """)
    static let databasePasswordFile = SettingSpec<String?>(
        "database_password_file", .text("<file>"), default: nil, summary: .withOther,
        help: "File holding the PostgreSQL password (else PGPASSWORD, PGPASSFILE or ~/.pgpass).")
    static let replicaDatabase = SettingSpec<String?>(
        "replica_database", .postgresURI, default: nil, summary: .withOther,
        help: """
            PostgreSQL hot standby URI serving eventual reads (the eventual endpoint and the /replica handle; \
            docs/ha.md).
            """)
    static let accessTokenFile = SettingSpec<String?>(
        "access_token_file", .text("<file>"), default: nil, summary: .withOther,
        help: "File holding the access token (else KVCONNECTD_ACCESS_TOKEN or DENO_KV_ACCESS_TOKEN).")
    static let accessToken = SettingSpec<String?>(
        "access_token", .text("<token>"), default: nil, sources: [.environment], secret: true,
        summary: .custom { _, s in "(from \(s.accessTokenSource))" },
        help: """
            The access token itself, from the environment only (never argv, never logged; DENO_KV_ACCESS_TOKEN \
            is read too).
            """)
    static let readOnlyAccessTokenFile = SettingSpec<String?>(
        "read_only_access_token_file", .text("<file>"), default: nil, summary: .withOther,
        help: "File holding a read-only access token for the single database (reads and watches only).")
    static let databasesFile = SettingSpec<String?>(
        "databases_file", .text("<file>"), default: nil,
        summary: .lines { _, s in s.databases.map { ("database.\($0.name)", $0.summary) } },
        help: """
            YAML file listing several databases with their tokens and scopes (see config/databases.yaml); \
            replaces --database and the single access token.
            """)
    static let signingKeyFile = SettingSpec<String?>(
        "signing_key_file", .text("<file>"), default: nil,
        summary: .custom { v, s in
            s.usesSigningKeyFile
                ? v ?? "\(s.defaultSigningKeyFile) (default)"
                : "(not used: PostgreSQL databases keep their signing keys in the database)"
        },
        help: """
            File holding the secret that signs data-plane tokens (created if missing; default signing.key \
            beside the database).
            """)

    // MARK: Protocol

    static let tokenLifetimeSeconds = SettingSpec<Int64>(
        "token_lifetime_seconds", .integer(min: 10), sets: .field(\ServiceConfiguration.tokenLifetimeSeconds),
        help: "Lifetime of data-plane tokens in seconds.")
    static let replicaMaxLagMs = SettingSpec<Int>(
        "replica_max_lag_ms", .integer(min: 0), default: 10_000,
        summary: .custom { v, _ in v == 0 ? "0 (no bound)" : String(v) },
        help: "Eventual reads go to the primary while the standby lags more than this (ms; 0 = no bound).")

    // MARK: HTTP front

    static let maxBodyBytes = SettingSpec<Int>(
        "max_body_bytes", .integer(min: 1024), sets: .field(\HTTPServerConfiguration.maxBodyBytes),
        help: "Largest accepted request body in bytes.")
    static let ioThreads = SettingSpec<Int>(
        "io_threads", .integer(min: 1), sets: .field(\HTTPServerConfiguration.ioThreads),
        help: "I/O threads for each HTTP version.")
    static let maxConnections = SettingSpec<Int>(
        "max_connections", .integer(min: 1), sets: .field(\HTTPServerConfiguration.maxConnections),
        help: "Open client connections at most; more are refused at accept with 503.")
    static let maxConnectionsPerIP = SettingSpec<Int>(
        "max_connections_per_ip", .integer(min: 1), sets: .field(\HTTPServerConfiguration.maxConnectionsPerIP),
        help: "Open client connections per client IP at most.")
    static let http2MaxConcurrentStreams = SettingSpec<Int>(
        "http2_max_concurrent_streams", .integer(min: 1, max: Int(Int32.max)),
        sets: .field(\HTTPServerConfiguration.maxConcurrentStreams),
        help: "Concurrent HTTP/2 streams per connection, i.e. open watches plus requests of one Deno.Kv handle.")
    static let requestTimeoutSeconds = SettingSpec<Int>(
        "request_timeout_seconds", .integer(min: 1), sets: .field(\HTTPServerConfiguration.requestTimeoutSeconds),
        help: "A request not fully received (headers and body) within this many seconds gets 408 and is closed.")
    static let idleTimeoutSeconds = SettingSpec<Int>(
        "idle_timeout_seconds", .integer(min: 1), sets: .field(\HTTPServerConfiguration.idleTimeoutSeconds),
        help: "A keep-alive connection without traffic is closed after this many seconds.")
    static let watchPingIntervalMs = SettingSpec<Int>(
        "watch_ping_interval_ms", .integer(min: 100), sets: .field(\ServiceConfiguration.watchPingIntervalMs),
        help: "Keep-alive ping interval of watch streams in milliseconds.")
    static let shutdownGraceSeconds = SettingSpec<Int>(
        "shutdown_grace_seconds", .integer(min: 0), default: 10,
        help: "On SIGTERM, how long requests in flight may take to be answered.")

    // MARK: Queues

    static let queueWebhookURL = SettingSpec<URL?>(
        "queue_webhook_url", .webhookURL, default: nil,
        summary: .custom { v, _ in v?.absoluteString ?? "(none: pull only)" },
        help: "Queue webhook: due messages are POSTed here (default: none, pull endpoints only).")
    static let queueWebhookSecretFile = SettingSpec<String?>(
        "queue_webhook_secret_file", .text("<file>"), default: nil,
        summary: .custom { v, s in s.queueWebhookURL == nil ? "(none)" : v.map { "\($0) (secret masked)" } ?? "(none)"
        },
        help: "File holding the secret that signs webhook deliveries (HMAC-SHA256); required with a webhook URL.")
    static let queueWebhookTimeoutMs = SettingSpec<Int>(
        "queue_webhook_timeout_ms", .integer(min: 10), default: 10_000,
        help: "A webhook delivery not answered 2xx within this many milliseconds failed.")
    static let queueConcurrency = SettingSpec<Int>(
        "queue_concurrency", .integer(min: 1), sets: .field(\QueuePushOptions.concurrency),
        help: "Webhook deliveries in flight at once.")
    static let queueVisibilityTimeoutMs = SettingSpec<Int64>(
        "queue_visibility_timeout_ms", .integer(min: 100), sets: .field(\ServiceConfiguration.queueVisibilityTimeoutMs),
        help: "Default lease of a pulled message in milliseconds.")
    static let queueMaxLeases = SettingSpec<Int>(
        "queue_max_leases", .integer(min: 0), sets: .field(\SQLiteStoreOptions.queueMaxLeases),
        help: "Poison limit: a message leased this many times without ack or fail is dead-lettered (0 = no limit).")
    static let queueLongPollMaxMs = SettingSpec<Int64>(
        "queue_long_poll_max_ms", .integer(min: 0), sets: .field(\ServiceConfiguration.queueLongPollMaxMs),
        help: "Longest long-poll of /queue/lease in milliseconds.")

    // MARK: Storage, URLs, TLS, logs, console

    static let synchronous = SettingSpec<Bool>(
        "synchronous", .choice(["full": true, "normal": false], noun: "synchronous mode", expected: "full or normal"),
        sets: .field(\SQLiteStoreOptions.synchronousFull),
        help: "SQLite synchronous mode: full (every acknowledged write is on disk) or normal.")
    static let publicURL = SettingSpec<String?>(
        "public_url", .text("<url>", none: "(from the request's Host)"),
        sets: .field(\ServiceConfiguration.publicBaseURL),
        help: "Public base URL for version-1 clients' absolute endpoint URLs (default: from the request's Host).")
    static let tlsCertFile = SettingSpec<String?>(
        "tls_cert_file", .text("<file>", none: "(none: plain HTTP)"),
        sets: .field(\HTTPServerConfiguration.tlsCertificateFile),
        help: "PEM certificate chain for HTTPS (with --tls-key-file; reloaded on SIGHUP).")
    static let tlsKeyFile = SettingSpec<String?>(
        "tls_key_file", .text("<file>", none: "(none)"), sets: .field(\HTTPServerConfiguration.tlsKeyFile),
        help: "PEM private key for HTTPS (with --tls-cert-file; reloaded on SIGHUP).")
    static let logLevel = SettingSpec<Logger.Level>(
        "log_level",
        .choice(
            [
                "trace": .trace, "debug": .debug, "info": .info, "notice": .notice, "warning": .warning,
                "error": .error, "critical": .critical
            ], noun: "log level", expected: "trace, debug, info, notice, warning, error or critical"),
        default: .info, help: "Log level.")
    static let logFormat = SettingSpec<String>(
        "log_format", .choice(["text": "text", "json": "json"], noun: "log format", expected: "text or json"),
        default: "text", help: "Log format: text, or json (one object per line).")
    static let console = SettingSpec<Bool>(
        "console",
        .choice(
            ["true": true, "on": true, "yes": true, "false": false, "off": false, "no": false],
            expected: "true or false"),
        default: true,
        summary: .custom { on, s in
            !on
                ? "false"
                : s.consoleListen.map { "true (on \($0.host):\($0.port))" } ?? "true (on the main listener, /console/)"
        },
        help: "Web console at /console/: true or false.")
    static let consoleListen = SettingSpec<HostPort?>(
        "console_listen", .optionalHostPort, default: nil, summary: .withOther,
        help: "Serve the console on this HOST:PORT instead of the main listener.")
}

extension SettingKind where Value == String? {
    /// A PostgreSQL hot standby URI (empty = none).
    static let postgresURI = SettingKind(
        placeholder: "<uri>",
        parse: { text, key in
            if text.isEmpty { return nil }
            guard PostgresURI.isPostgres(text) else {
                throw Invalid(description: "\(key) must be a postgres:// URI of a hot standby, not '\(text)'")
            }
            return text
        },
        describe: { $0.map(ReplicaSettings.display) ?? "" }, invalidSamples: ["/not/a/uri"],
        validSamples: ["postgres://a@h/db", "postgres://b@h/db"])
}

extension SettingKind where Value == URL? {
    /// The queue webhook: an http(s) URL with a host (empty = none).
    static let webhookURL = SettingKind(
        placeholder: "<url>",
        parse: { text, key in
            if text.isEmpty { return nil }
            guard let url = URL(string: text), let scheme = url.scheme?.lowercased(),
                ["http", "https"].contains(scheme),
                url.host != nil
            else {
                throw Invalid(description: "invalid \(key) '\(text)': expected an http:// or https:// URL")
            }
            return url
        },
        describe: { $0?.absoluteString ?? "" }, invalidSamples: ["ftp://x", "not a url"],
        validSamples: ["http://a/q", "https://b/q"])
}
