import ArgumentParser
import Foundation

/// Flags shared by `serve` and `check-config`; each maps to a config key.
struct SettingFlags: ParsableArguments {
    @Option(help: "YAML config file (env KVCONNECTD_CONFIG).")
    var config: String?
    @Option(help: "Listen address HOST:PORT (default 127.0.0.1:4512).")
    var listen: String?
    @Option(help: "SQLite database file (default ./data/kv.sqlite3), or a postgres:// URI (PostgreSQL; no password here: see --database-password-file).")
    var database: String?
    @Option(help: "File holding the PostgreSQL password (else PGPASSWORD, PGPASSFILE or ~/.pgpass).")
    var databasePasswordFile: String?
    @Option(help: "PostgreSQL hot standby URI serving eventual reads (the eventual endpoint and the /replica handle; docs/ha.md).")
    var replicaDatabase: String?
    @Option(help: "Eventual reads go to the primary while the standby lags more than this (ms; 0 = no bound; default 10000).")
    var replicaMaxLagMs: Int?
    @Option(help: "YAML file listing several databases with their tokens and scopes (see config/databases.yaml); replaces --database and the single access token.")
    var databasesFile: String?
    @Option(help: "File holding a read-only access token for the single database (reads and watches only).")
    var readOnlyAccessTokenFile: String?
    @Option(help: "File holding the access token (else KVCONNECTD_ACCESS_TOKEN or DENO_KV_ACCESS_TOKEN).")
    var accessTokenFile: String?
    @Option(help: "File holding the secret that signs data-plane tokens (created if missing; default beside the database).")
    var signingKeyFile: String?
    @Option(help: "Lifetime of data-plane tokens in seconds (default 3600).")
    var tokenLifetimeSeconds: Int?
    @Option(help: "Largest accepted request body in bytes (default 1048576).")
    var maxBodyBytes: Int?
    @Option(help: "I/O threads for each HTTP version (default 2).")
    var ioThreads: Int?
    @Option(help: "Open client connections at most; more are refused at accept with 503 (default 10000).")
    var maxConnections: Int?
    @Option(help: "Open client connections per client IP at most (default 1000).")
    var maxConnectionsPerIp: Int?
    @Option(help: "Concurrent HTTP/2 streams per connection, i.e. open watches plus requests of one Deno.Kv handle (default 100000).")
    var http2MaxConcurrentStreams: Int?
    @Option(help: "A request not fully received (headers and body) within this many seconds gets 408 and is closed (default 30).")
    var requestTimeoutSeconds: Int?
    @Option(help: "A keep-alive connection without traffic is closed after this many seconds (default 120).")
    var idleTimeoutSeconds: Int?
    @Option(help: "On SIGTERM, how long requests in flight may take to be answered (default 10).")
    var shutdownGraceSeconds: Int?
    @Option(help: "Keep-alive ping interval of watch streams in milliseconds (default 5000).")
    var watchPingIntervalMs: Int?
    @Option(help: "SQLite synchronous mode: full (default; every acknowledged write is on disk) or normal.")
    var synchronous: String?
    @Option(help: "Public base URL for version-1 clients' absolute endpoint URLs.")
    var publicURL: String?
    @Option(help: "Log level: trace, debug, info (default), notice, warning, error, critical.")
    var logLevel: String?
    @Option(help: "Log format: text (default) or json (one object per line).")
    var logFormat: String?
    @Option(help: "PEM certificate chain for HTTPS (with --tls-key-file; reloaded on SIGHUP).")
    var tlsCertFile: String?
    @Option(help: "PEM private key for HTTPS (with --tls-cert-file; reloaded on SIGHUP).")
    var tlsKeyFile: String?
    @Option(help: "Queue webhook: due messages are POSTed here (default: none, pull endpoints only).")
    var queueWebhookURL: String?
    @Option(help: "File holding the secret that signs webhook deliveries (HMAC-SHA256); required with a webhook URL.")
    var queueWebhookSecretFile: String?
    @Option(help: "A webhook delivery not answered 2xx within this many milliseconds failed (default 10000).")
    var queueWebhookTimeoutMs: Int?
    @Option(help: "Webhook deliveries in flight at once (default 16).")
    var queueConcurrency: Int?
    @Option(help: "Default lease of a pulled message in milliseconds (default 30000).")
    var queueVisibilityTimeoutMs: Int?
    @Option(help: "Longest long-poll of /queue/lease in milliseconds (default 20000).")
    var queueLongPollMaxMs: Int?
    @Option(help: "Web console at /console/: true (default) or false.")
    var console: String?
    @Option(help: "Serve the console on this HOST:PORT instead of the main listener.")
    var consoleListen: String?
    @Option(help: "Poison limit: a message leased this many times without ack or fail is dead-lettered (default 10; 0 = no limit).")
    var queueMaxLeases: Int?

    var asConfigValues: [String: String] {
        var v: [String: String] = [:]
        v["listen"] = listen
        v["database"] = database
        v["database_password_file"] = databasePasswordFile
        v["replica_database"] = replicaDatabase
        v["replica_max_lag_ms"] = replicaMaxLagMs.map(String.init)
        v["access_token_file"] = accessTokenFile
        v["databases_file"] = databasesFile
        v["read_only_access_token_file"] = readOnlyAccessTokenFile
        v["signing_key_file"] = signingKeyFile
        v["token_lifetime_seconds"] = tokenLifetimeSeconds.map(String.init)
        v["max_body_bytes"] = maxBodyBytes.map(String.init)
        v["io_threads"] = ioThreads.map(String.init)
        v["max_connections"] = maxConnections.map(String.init)
        v["max_connections_per_ip"] = maxConnectionsPerIp.map(String.init)
        v["http2_max_concurrent_streams"] = http2MaxConcurrentStreams.map(String.init)
        v["request_timeout_seconds"] = requestTimeoutSeconds.map(String.init)
        v["idle_timeout_seconds"] = idleTimeoutSeconds.map(String.init)
        v["watch_ping_interval_ms"] = watchPingIntervalMs.map(String.init)
        v["shutdown_grace_seconds"] = shutdownGraceSeconds.map(String.init)
        v["synchronous"] = synchronous
        v["public_url"] = publicURL
        v["log_level"] = logLevel
        v["log_format"] = logFormat
        v["tls_cert_file"] = tlsCertFile
        v["tls_key_file"] = tlsKeyFile
        v["queue_webhook_url"] = queueWebhookURL
        v["queue_webhook_secret_file"] = queueWebhookSecretFile
        v["queue_webhook_timeout_ms"] = queueWebhookTimeoutMs.map(String.init)
        v["queue_concurrency"] = queueConcurrency.map(String.init)
        v["queue_visibility_timeout_ms"] = queueVisibilityTimeoutMs.map(String.init)
        v["queue_max_leases"] = queueMaxLeases.map(String.init)
        v["queue_long_poll_max_ms"] = queueLongPollMaxMs.map(String.init)
        v["console"] = console
        v["console_listen"] = consoleListen
        return v
    }

    /// Bad configuration fails fast: one line on stderr, exit code 2.
    func resolve() async throws -> Settings {
        do {
            return try await Settings.resolve(flags: asConfigValues, configFile: config)
        } catch {
            FileHandle.standardError.write(Data("kvconnectd: configuration error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon (default).")
    @OptionGroup var flags: SettingFlags

    func run() async throws {
        let settings = try await flags.resolve()
        LogBootstrap.bootstrap(format: settings.logFormat, level: settings.logLevel)
        _ = MetricsBackend.bootstrap()  // before the engine records its first commit
        let daemon: Daemon
        do {
            let flags = self.flags
            daemon = try Daemon(settings: settings) {
                try await Settings.resolve(flags: flags.asConfigValues, configFile: flags.config)
            }
        } catch {
            FileHandle.standardError.write(Data("kvconnectd: cannot start: \(error)\n".utf8))
            throw ExitCode(2)
        }
        await daemon.runUntilSignalled()
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration and print the effective settings (secrets masked).")
    @OptionGroup var flags: SettingFlags

    func run() async throws {
        let settings = try await flags.resolve()
        for (k, v) in settings.summary { print("\(k) = \(v)") }
    }
}
