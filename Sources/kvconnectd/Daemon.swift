import Foundation
import HTTPFront
import KVConnect
import KVConsole
import KVEngine
import KVSQLite
import Logging

/// Wires engine, protocol and front together and owns their lifetime.
final class Daemon: Sendable {
    let settings: Settings
    let logger: Logger
    let tenants: [Tenant]
    let server: HTTPServer
    let adapter: FrontAdapter
    /// The console's own listener (`console_listen`), if any.
    let consoleServer: HTTPServer?
    let notifier = SystemdNotifier()
    private let deliverers: [WebhookDeliverer]
    private let sharedKeys: [SharedSigningKeys]
    /// Re-reads the configuration (same flags and environment) for SIGHUP.
    let reload: @Sendable () async throws -> Settings

    init(settings: Settings, reload: @escaping @Sendable () async throws -> Settings) throws {
        self.settings = settings
        self.reload = reload
        var logger = Logger(label: "kvconnectd")
        logger.logLevel = settings.logLevel
        self.logger = logger

        var opened: [Tenant] = []
        do {
            for spec in settings.databases {
                var options = SQLiteStoreOptions()
                settings.configure(&options)
                let store = try StorageFactory.open(spec.location, passwordFile: spec.passwordFile, options: options)
                let replica = try ReplicaSettings.route(
                    for: spec, primary: store, maxLagMs: settings.replicaMaxLagMs, logger: logger)
                opened.append(Tenant(name: spec.name, store: store, tokens: spec.tokens, replica: replica))
            }
        } catch {
            for t in opened { t.store.close() }
            throw error
        }
        tenants = opened
        // Data-plane token keys: the key file for SQLite databases; databases
        // served by several daemons keep theirs in the database.
        let keyring: SigningKeyring
        do {
            let secret =
                settings.usesSigningKeyFile
                ? try SigningKey.loadOrCreate(path: settings.signingKeyFile ?? settings.defaultSigningKeyFile)
                : try SigningKey.random()
            keyring = SigningKeyring(default: TokenSigner(secret: secret))
            sharedKeys = try tenants.compactMap { try SharedSigningKeys.install(for: $0.store, in: keyring) }
        } catch {
            for t in opened { t.store.close() }
            throw error
        }

        var serviceConfig = ServiceConfiguration()
        settings.configure(&serviceConfig)
        let registry = MetricsBackend.bootstrap()
        let exporter = MetricsExporter(registry: registry, stores: tenants.map(\.store))
        let replicated = tenants
        serviceConfig.metricsText = { exporter.render() + ReplicaSettings.metrics(replicated) }
        let service = KVConnectService(
            tenants: tenants, keyring: keyring,
            configuration: serviceConfig, logger: logger)

        var front = HTTPServerConfiguration()
        settings.configure(&front)
        var console: ConsoleService?
        if settings.console {
            var c = ConsoleConfiguration()
            c.secureCookies = front.tlsEnabled
            c.serverVersion = BuildInfo.version
            console = ConsoleService(
                tenants: tenants, configuration: c,
                stats: ConsoleStatsSource(registry: registry), logger: logger)
        }
        adapter = FrontAdapter(service: service, console: settings.consoleListen == nil ? console : nil)
        server = HTTPServer(configuration: front, handler: adapter, logger: logger)
        if let console, let consoleListen = settings.consoleListen {
            var consoleFront = front
            consoleFront.host = consoleListen.host
            consoleFront.port = consoleListen.port
            consoleServer = HTTPServer(
                configuration: consoleFront,
                handler: FrontAdapter(service: service, console: console, consoleOnly: true),
                logger: logger)
        } else {
            consoleServer = nil
        }
        // Queue push, per database (pull endpoints work either way).
        var deliverers: [WebhookDeliverer] = []
        if let url = settings.queueWebhookURL {
            for t in tenants {
                let deliverer = try WebhookDeliverer(
                    url: url, secret: settings.queueWebhookSecret,
                    timeoutMs: settings.queueWebhookTimeoutMs,
                    databaseId: t.databaseId, concurrency: settings.queueConcurrency,
                    logger: logger)
                deliverers.append(deliverer)
                var push = QueuePushOptions()
                settings.configure(&push)
                // A safety net only: the deliverer reports back within its timeout.
                push.leaseMs = Int64(settings.queueWebhookTimeoutMs) + 30_000
                t.store.startQueueDelivery(options: push) { m, done in
                    deliverer.deliver(m, done: done)
                }
            }
        }
        self.deliverers = deliverers
        do {
            try server.start()
            do { try consoleServer?.start() } catch {
                server.stop()
                throw error
            }
        } catch {
            for t in tenants {
                t.store.stopQueueDelivery(drainTimeoutMs: 0)
                t.store.close()
                t.replica?.store.close()
            }
            throw error
        }
        let scheme = front.tlsEnabled ? "https" : "http"
        logger.info(
            "kvconnectd listening",
            metadata: [
                "listen": "\(settings.listen.host):\(server.boundPort)",
                "database":
                    "\(settings.databases.count == 1 ? settings.databases[0].location.display : settings.databases.map { "\($0.name)=\($0.location.display)" }.joined(separator: ","))",
                "database_id": "\(tenants.map(\.databaseId).joined(separator: ","))",
                "protocol_versions": "\(MetadataExchange.serverVersions.map(String.init).joined(separator: ","))",
                "http": front.tlsEnabled ? "https: HTTP/1.1 and HTTP/2 (TLS, ALPN h2)" : "HTTP/1.1 and HTTP/2 (h2c)",
                "url": "\(scheme)://\(settings.listen.host):\(server.boundPort)",
                "queue": "\(settings.queueWebhookURL.map { "push to \($0.absoluteString) + pull" } ?? "pull only")",
                "queue_ready_again": "\(tenants.map { $0.store.queueRecoveredOnOpen }.reduce(0, +))",
                "systemd_notify": "\(notifier.isActive)",
                "console":
                    "\(settings.console ? "\(scheme)://\(consoleServer.map { "\(settings.consoleListen!.host):\($0.boundPort)" } ?? "\(settings.listen.host):\(server.boundPort)")/console/" : "off")"
            ])
        notifier.ready(status: "listening on \(scheme)://\(settings.listen.host):\(server.boundPort)")
    }

    /// Blocks until SIGTERM or SIGINT, then stops accepting, lets pending
    /// commits finish and closes the database. SIGHUP reloads in between.
    func runUntilSignalled() async {
        // One stream carries every signal, consumed here in order: a reload
        // finishes before the next signal is looked at, so a SIGTERM that
        // arrives during a reload waits for it (as a blocked handler did).
        let (signals, delivered) = AsyncStream.makeStream(of: Int32.self)
        let queue = DispatchQueue(label: "kvconnectd.signals")
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            src.setEventHandler { delivered.yield(sig) }
            src.resume()
            sources.append(src)
        }
        var signalName = "SIGTERM"
        for await sig in signals {
            if sig == SIGHUP {
                await reloadOnHangup()
                continue
            }
            signalName = sig == SIGINT ? "SIGINT" : "SIGTERM"
            break
        }
        // Later signals are ignored (SIG_IGN stays set): shutdown runs once.
        for src in sources { src.cancel() }
        delivered.finish()
        logger.info("shutting down", metadata: ["signal": "\(signalName)"])
        notifier.stopping()
        // Stop accepting; give requests in flight up to the grace period to
        // be answered; then close what is open (watch streams end) and let
        // pending commits finish; closing the last SQLite connection
        // checkpoints the WAL.
        server.stopAccepting()
        consoleServer?.stopAccepting()
        let left = adapter.inFlight.drain(until: Date().addingTimeInterval(Double(settings.shutdownGraceSeconds)))
        if left > 0 {
            logger.warning(
                "shutdown grace period over with \(left) request(s) unanswered; they get 503 or a closed connection")
        }
        server.stop()
        consoleServer?.stop()
        for k in sharedKeys { k.stop() }
        for t in tenants {
            // In-flight deliveries get their timeout to report back; anything
            // left in flight is ready again on the next start.
            t.store.stopQueueDelivery(drainTimeoutMs: Int64(settings.queueWebhookTimeoutMs) + 1000)
            t.store.close()
            t.replica?.store.close()
        }
        deliverers.forEach { $0.stop() }
        logger.info("stopped")
    }

    /// SIGHUP: access tokens (per database, by name) and the TLS
    /// certificate; open connections stay. A bad configuration keeps the old
    /// one and logs why.
    private func reloadOnHangup() async {
        notifier.reloading()
        let result: Result<Settings, Error>
        do { result = .success(try await reload()) } catch { result = .failure(error) }
        switch result {
        case .failure(let error):
            logger.error(
                "SIGHUP: configuration reload failed, keeping the previous tokens", metadata: ["reason": "\(error)"])
        case .success(let fresh):
            let byName = Dictionary(uniqueKeysWithValues: fresh.databases.map { ($0.name, $0) })
            let missing = tenants.filter { byName[$0.name] == nil }.map(\.name)
            if !missing.isEmpty {
                logger.error(
                    "SIGHUP: reload names no database \(missing) (adding or removing databases needs a restart); keeping the previous tokens"
                )
            } else {
                for t in tenants { t.replaceTokens(byName[t.name]!.tokens) }
                logger.info(
                    "SIGHUP: reloaded access tokens",
                    metadata: [
                        "databases": "\(tenants.map(\.name).joined(separator: ","))"
                    ])
                if let url = fresh.queueWebhookURL, !deliverers.isEmpty {
                    for d in deliverers {
                        d.update(url: url, secret: fresh.queueWebhookSecret, timeoutMs: fresh.queueWebhookTimeoutMs)
                    }
                    logger.info("SIGHUP: reloaded queue webhook settings", metadata: ["url": "\(url.absoluteString)"])
                } else if (fresh.queueWebhookURL == nil) != deliverers.isEmpty {
                    logger.warning(
                        "SIGHUP: turning queue webhook push on or off needs a restart; kept the current mode")
                }
            }
        }
        reloadTLS()
        notifier.reloaded()
    }

    private func reloadTLS() {
        guard settings.tlsCertFile != nil else {
            logger.info("SIGHUP: TLS not configured, nothing to reload")
            return
        }
        do {
            try server.reloadTLS()
            logger.info(
                "SIGHUP: reloaded TLS certificate and key",
                metadata: [
                    "tls_cert_file": "\(settings.tlsCertFile ?? "")", "tls_key_file": "\(settings.tlsKeyFile ?? "")"
                ])
        } catch {
            logger.error(
                "SIGHUP: TLS reload failed, keeping the previous certificate",
                metadata: [
                    "reason": "\(error)"
                ])
        }
    }

}
