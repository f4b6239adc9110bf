import Foundation
import HTTPFront
import KVConnect
import KVEngine
import KVSQLite
import Logging

/// Wires engine, protocol and front together and owns their lifetime.
final class Daemon: @unchecked Sendable {
    let settings: Settings
    let logger: Logger
    let tenants: [Tenant]
    let server: HTTPServer
    let adapter: FrontAdapter
    let notifier = SystemdNotifier()
    private var deliverers: [WebhookDeliverer] = []
    /// Re-reads the configuration (same flags and environment) for SIGHUP.
    let reload: @Sendable () async throws -> Settings

    init(settings: Settings, reload: @escaping @Sendable () async throws -> Settings) throws {
        self.settings = settings
        self.reload = reload
        var logger = Logger(label: "kvconnectd")
        logger.logLevel = settings.logLevel
        self.logger = logger

        var options = SQLiteStoreOptions()
        options.synchronousFull = settings.synchronousFull
        var opened: [Tenant] = []
        do {
            for spec in settings.databases {
                let dir = (spec.path as NSString).deletingLastPathComponent
                if !dir.isEmpty {
                    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                }
                let store = try SQLiteStore(path: spec.path, options: options)
                opened.append(Tenant(name: spec.name, store: store, tokens: spec.tokens))
            }
        } catch {
            for t in opened { t.store.close() }
            throw error
        }
        tenants = opened
        let secret: [UInt8]
        do {
            secret = try SigningKey.loadOrCreate(path: settings.signingKeyFile ?? settings.defaultSigningKeyFile)
        } catch {
            for t in opened { t.store.close() }
            throw error
        }

        var serviceConfig = ServiceConfiguration()
        serviceConfig.tokenLifetimeSeconds = settings.tokenLifetimeSeconds
        serviceConfig.publicBaseURL = settings.publicURL
        serviceConfig.watchPingIntervalMs = settings.watchPingIntervalMs
        serviceConfig.queueVisibilityTimeoutMs = Int64(settings.queueVisibilityTimeoutMs)
        serviceConfig.queueLongPollMaxMs = Int64(settings.queueLongPollMaxMs)
        serviceConfig.metricsText = MetricsExporter(registry: MetricsBackend.bootstrap(), stores: tenants.map(\.store)).render
        let service = KVConnectService(tenants: tenants, signer: TokenSigner(secret: secret),
                                       configuration: serviceConfig, logger: logger)

        var front = HTTPServerConfiguration()
        front.host = settings.host
        front.port = settings.port
        front.maxBodyBytes = settings.maxBodyBytes
        front.ioThreads = settings.ioThreads
        front.maxConnections = settings.maxConnections
        front.maxConnectionsPerIP = settings.maxConnectionsPerIP
        front.maxConcurrentStreams = settings.http2MaxConcurrentStreams
        front.requestTimeoutSeconds = settings.requestTimeoutSeconds
        front.idleTimeoutSeconds = settings.idleTimeoutSeconds
        front.tlsCertificateFile = settings.tlsCertFile
        front.tlsKeyFile = settings.tlsKeyFile
        adapter = FrontAdapter(service: service)
        server = HTTPServer(configuration: front, handler: adapter, logger: logger)
        // Queue push, per database (pull endpoints work either way).
        if let url = settings.queueWebhookURL {
            for t in tenants {
                let deliverer = WebhookDeliverer(url: url, secret: settings.queueWebhookSecret,
                                                 timeoutMs: settings.queueWebhookTimeoutMs,
                                                 databaseId: t.databaseId, concurrency: settings.queueConcurrency,
                                                 logger: logger)
                deliverers.append(deliverer)
                t.store.startQueueDelivery(options: QueuePushOptions(
                    concurrency: settings.queueConcurrency,
                    leaseMs: Int64(settings.queueWebhookTimeoutMs) + 30_000)) { m, done in
                    deliverer.deliver(m, done: done)
                }
            }
        }
        do {
            try server.start()
        } catch {
            for t in tenants {
                t.store.stopQueueDelivery(drainTimeoutMs: 0)
                t.store.close()
            }
            throw error
        }
        let scheme = front.tlsEnabled ? "https" : "http"
        logger.info("kvconnectd listening", metadata: [
            "listen": "\(settings.host):\(server.boundPort)",
            "database": "\(settings.databases.count == 1 ? settings.databases[0].path : settings.databases.map { "\($0.name)=\($0.path)" }.joined(separator: ","))",
            "database_id": "\(tenants.map(\.databaseId).joined(separator: ","))",
            "protocol_versions": "\(MetadataExchange.serverVersions.map(String.init).joined(separator: ","))",
            "http": front.tlsEnabled ? "https: HTTP/1.1 and HTTP/2 (TLS, ALPN h2)" : "HTTP/1.1 and HTTP/2 (h2c)",
            "url": "\(scheme)://\(settings.host):\(server.boundPort)",
            "queue": "\(settings.queueWebhookURL.map { "push to \($0.absoluteString) + pull" } ?? "pull only")",
            "queue_ready_again": "\(tenants.map { $0.store.queueRecoveredOnOpen }.reduce(0, +))",
            "systemd_notify": "\(notifier.isActive)",
        ])
        notifier.ready(status: "listening on \(scheme)://\(settings.host):\(server.boundPort)")
    }

    /// Blocks until SIGTERM or SIGINT, then stops accepting, lets pending
    /// commits finish and closes the database.
    func runUntilSignalled() async {
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let queue = DispatchQueue(label: "kvconnectd.signals")
        let signalName: String = await withCheckedContinuation { (cont: CheckedContinuation<String, Never>) in
            let once = OnceFlag()
            var sources: [DispatchSourceSignal] = []
            for (sig, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
                let src = DispatchSource.makeSignalSource(signal: sig, queue: queue)
                src.setEventHandler { if once.claim() { cont.resume(returning: name) } }
                src.resume()
                sources.append(src)
            }
            // SIGHUP: reload the TLS certificate and key (new connections).
            signal(SIGHUP, SIG_IGN)
            let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: queue)
            hup.setEventHandler { [self] in reloadOnHangup() }
            hup.resume()
            sources.append(hup)
            Daemon.keepAlive = sources
        }
        logger.info("shutting down", metadata: ["signal": "\(signalName)"])
        notifier.stopping()
        // Stop accepting; give requests in flight up to the grace period to
        // be answered; then close what is open (watch streams end) and let
        // pending commits finish; closing the last SQLite connection
        // checkpoints the WAL.
        server.stopAccepting()
        let left = adapter.inFlight.drain(until: Date().addingTimeInterval(Double(settings.shutdownGraceSeconds)))
        if left > 0 { logger.warning("shutdown grace period over with \(left) request(s) unanswered; they get 503 or a closed connection") }
        server.stop()
        for t in tenants {
            // In-flight deliveries get their timeout to report back; anything
            // left in flight is ready again on the next start.
            t.store.stopQueueDelivery(drainTimeoutMs: Int64(settings.queueWebhookTimeoutMs) + 1000)
            t.store.close()
        }
        logger.info("stopped")
    }

    /// SIGHUP: access tokens (per database, by name) and the TLS
    /// certificate; open connections stay. A bad configuration keeps the old
    /// one and logs why.
    private func reloadOnHangup() {
        notifier.reloading()
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<Settings, Error>?
        Task {
            do { result = .success(try await reload()) } catch { result = .failure(error) }
            done.signal()
        }
        done.wait()
        switch result! {
        case .failure(let error):
            logger.error("SIGHUP: configuration reload failed, keeping the previous tokens", metadata: ["reason": "\(error)"])
        case .success(let fresh):
            let byName = Dictionary(uniqueKeysWithValues: fresh.databases.map { ($0.name, $0) })
            let missing = tenants.filter { byName[$0.name] == nil }.map(\.name)
            if !missing.isEmpty {
                logger.error("SIGHUP: reload names no database \(missing) (adding or removing databases needs a restart); keeping the previous tokens")
            } else {
                for t in tenants { t.replaceTokens(byName[t.name]!.tokens) }
                logger.info("SIGHUP: reloaded access tokens", metadata: [
                    "databases": "\(tenants.map(\.name).joined(separator: ","))"])
                if let url = fresh.queueWebhookURL, !deliverers.isEmpty {
                    for d in deliverers {
                        d.update(url: url, secret: fresh.queueWebhookSecret, timeoutMs: fresh.queueWebhookTimeoutMs)
                    }
                    logger.info("SIGHUP: reloaded queue webhook settings", metadata: ["url": "\(url.absoluteString)"])
                } else if (fresh.queueWebhookURL == nil) != deliverers.isEmpty {
                    logger.warning("SIGHUP: turning queue webhook push on or off needs a restart; kept the current mode")
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
            logger.info("SIGHUP: reloaded TLS certificate and key", metadata: [
                "tls_cert_file": "\(settings.tlsCertFile ?? "")", "tls_key_file": "\(settings.tlsKeyFile ?? "")"])
        } catch {
            logger.error("SIGHUP: TLS reload failed, keeping the previous certificate", metadata: [
                "reason": "\(error)"])
        }
    }

    nonisolated(unsafe) static var keepAlive: [DispatchSourceSignal] = []
}

final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func claim() -> Bool {
        lock.lock(); defer { lock.unlock() }
        if done { return false }
        done = true
        return true
    }
}
